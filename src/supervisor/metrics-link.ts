/**
 * `/metrics` across `--workers` (whatever the store): the worker that a scrape reaches asks the
 * primary, the primary asks every worker for its families, merges them with the totals of
 * workers that exited (metrics/group.ts) and answers the text. Messages go over the cluster
 * IPC channel; nothing of this runs on the request path.
 */
import type { Worker } from 'node:cluster'
import { SwitchyardError } from '../errors.js'
import { renderFamilies, type Family } from '../metrics/exposition.js'
import { fromWire, GroupTotals, toWire } from '../metrics/group.js'
import { isMessage } from './messages.js'

/** worker → primary: answer a scrape for the whole group */
interface ScrapeMessage {
  sy: 'metrics-scrape'
  id: number
}
/** primary → worker: the group's exposition */
interface TextMessage {
  sy: 'metrics-text'
  id: number
  text: string
}
/** primary → worker: send your families */
interface CollectMessage {
  sy: 'metrics-collect'
  id: number
}
/**
 * worker → primary: its families, for a collect, or the last ones when it stops (`id` absent);
 * none from a worker still starting
 */
interface SnapshotMessage {
  sy: 'metrics-snapshot'
  id?: number
  families?: unknown
}

/** How long the primary waits for a worker's families; a late worker counts with its last ones. */
const COLLECT_TIMEOUT_MS = 1_500
/** How long a worker waits for the group's text before the scrape fails (500). */
const SCRAPE_TIMEOUT_MS = 5_000

/** Primary side. */
export class MetricsHub {
  private readonly latest = new Map<Worker, Family[]>()
  private readonly totals = new GroupTotals()
  private readonly waiting = new Map<number, () => void>()
  private nextId = 1

  constructor(
    private readonly opts: {
      /** every worker alive now */
      workers: () => Worker[]
      /** the `worker` label of its gauges (its slot), or undefined for one being replaced */
      label: (w: Worker) => string | undefined
    },
  ) {}

  /** Serves `w`'s scrapes and keeps its figures; when it exits, its last counts join the totals. */
  attach(w: Worker): void {
    w.on('message', (m: unknown) => {
      if (isMessage<SnapshotMessage>(m, 'metrics-snapshot')) {
        if (m.families !== undefined) this.latest.set(w, fromWire(m.families))
        if (m.id !== undefined) this.waiting.get(m.id)?.()
      } else if (isMessage<ScrapeMessage>(m, 'metrics-scrape')) {
        void this.scrape().then((text) => {
          const reply: TextMessage = { sy: 'metrics-text', id: m.id, text }
          if (w.isConnected()) w.send(reply)
        })
      }
    })
    // A snapshot sent just before the exit may be read in the same turn as the exit.
    w.once('exit', () =>
      setImmediate(() => {
        const last = this.latest.get(w)
        this.latest.delete(w)
        if (last !== undefined) this.totals.retire(last)
      }),
    )
  }

  /** The group's exposition: fresh families from every worker that answers in time. */
  async scrape(): Promise<string> {
    const workers = this.opts.workers().filter((w) => w.isConnected())
    await Promise.all(workers.map((w) => this.collect(w)))
    const live = workers.flatMap((w) => {
      const families = this.latest.get(w)
      return families === undefined ? [] : [{ worker: this.opts.label(w), families }]
    })
    return renderFamilies(this.totals.merge(live))
  }

  private collect(w: Worker): Promise<void> {
    const id = this.nextId++
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, COLLECT_TIMEOUT_MS)
      function done() {
        clearTimeout(timer)
        resolve()
      }
      this.waiting.set(id, done)
      const msg: CollectMessage = { sy: 'metrics-collect', id }
      try {
        w.send(msg)
      } catch {
        done()
      }
    }).finally(() => this.waiting.delete(id))
  }
}

/** Worker side: answers the primary's collects and asks it for the group's text. */
export class WorkerMetricsLink {
  private source: { families(): Promise<Family[]> } | undefined
  private nextId = 1
  private readonly pending = new Map<number, (text: string) => void>()
  private readonly onMessage = (m: unknown): void => {
    if (isMessage<CollectMessage>(m, 'metrics-collect')) {
      const answer = (families?: Family[]) => {
        const reply: SnapshotMessage = { sy: 'metrics-snapshot', id: m.id, ...(families === undefined ? {} : { families: toWire(families) }) }
        if (process.connected) process.send!(reply)
      }
      if (this.source === undefined) answer()
      else void this.source.families().then(answer, () => answer())
    } else if (isMessage<TextMessage>(m, 'metrics-text')) {
      this.pending.get(m.id)?.(m.text)
    }
  }

  constructor() {
    if (typeof process.send !== 'function') throw new Error('WorkerMetricsLink needs an IPC channel to the primary (cluster worker)')
    process.on('message', this.onMessage)
  }

  /** Starts answering collects with `source`'s families (this instance's metrics). */
  serve(source: { families(): Promise<Family[]> }): void {
    this.source = source
  }

  /** The group's exposition, from the primary. */
  scrape(): Promise<string> {
    if (!process.connected) return Promise.reject(new SwitchyardError('INTERNAL', 'the primary process is gone'))
    const id = this.nextId++
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new SwitchyardError('INTERNAL', `the primary did not answer the scrape within ${SCRAPE_TIMEOUT_MS} ms`))
      }, SCRAPE_TIMEOUT_MS)
      this.pending.set(id, (text) => {
        clearTimeout(timer)
        this.pending.delete(id)
        resolve(text)
      })
      const msg: ScrapeMessage = { sy: 'metrics-scrape', id }
      process.send!(msg)
    })
  }

  /** Sends this worker's last figures before it exits, so the group's sums keep all it counted. */
  async final(): Promise<void> {
    const source = this.source
    if (source === undefined || !process.connected) return
    const msg: SnapshotMessage = { sy: 'metrics-snapshot', families: toWire(await source.families()) }
    await new Promise<void>((resolve) => process.send!(msg, () => resolve()))
  }

  close(): void {
    process.off('message', this.onMessage)
  }
}
