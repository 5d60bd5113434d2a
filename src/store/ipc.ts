/**
 * The memory store across `--workers`: the primary process holds the one MemoryStore, and each
 * worker reaches it
 * through the cluster IPC channel with `IpcStore`, which implements the same Store contract.
 * So a worker is a whole switchyard instance (data plane, control plane, admin API) whatever
 * the store: with Redis it talks to Redis, with memory it talks to the primary.
 */
import type { Worker } from 'node:cluster'
import type { State } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import type { MemoryStore } from './memory.js'
import type { TelemetrySample } from '../telemetry/types.js'
import type { AuditEvent, CommitResult, Delta, InstanceInfo, Store, StoreHead, Touched } from './store.js'

type Op =
  | 'load'
  | 'revision'
  | 'head'
  | 'commit'
  | 'changesSince'
  | 'seed'
  | 'events'
  | 'register'
  | 'unregister'
  | 'instances'
  | 'lease'
  | 'releaseLease'
  | 'leaseHolder'
  | 'pushTelemetry'
  | 'telemetry'

interface CallMessage {
  sy: 'store-call'
  id: number
  op: Op
  args: unknown[]
}
interface ReplyMessage {
  sy: 'store-reply'
  id: number
  ok: boolean
  value?: unknown
  error?: { code: string; message: string }
}
interface ChangeMessage {
  sy: 'store-change'
  revision: number
}

/** A call the primary does not answer within this time fails with STORE_UNAVAILABLE. */
const CALL_TIMEOUT_MS = 5_000

/** Primary side: answers workers' store calls from `store`, and tells every worker of each change. */
export function serveStore(store: MemoryStore, workers: () => Iterable<Worker>): (worker: Worker, message: unknown) => void {
  store.onChange((revision) => {
    const msg: ChangeMessage = { sy: 'store-change', revision }
    for (const w of workers()) if (w.isConnected()) w.send(msg)
  })
  return (worker, message) => {
    const m = message as Partial<CallMessage> | null
    if (m?.sy !== 'store-call' || typeof m.id !== 'number' || typeof m.op !== 'string') return
    const fn = (store as unknown as Record<Op, (...args: unknown[]) => Promise<unknown>>)[m.op]
    void Promise.resolve()
      .then(() => fn.apply(store, m.args ?? []))
      .then(
        (value): ReplyMessage => ({ sy: 'store-reply', id: m.id!, ok: true, value }),
        (err: unknown): ReplyMessage => ({
          sy: 'store-reply',
          id: m.id!,
          ok: false,
          error: { code: err instanceof SwitchyardError ? err.code : 'STORE_UNAVAILABLE', message: String((err as Error)?.message ?? err) },
        }),
      )
      .then((reply) => {
        if (worker.isConnected()) worker.send(reply)
      })
  }
}

/** Worker side: the Store contract over `process.send`. */
export class IpcStore implements Store {
  readonly kind = 'memory' as const
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()
  private readonly changeListeners = new Set<(revision: number) => void>()
  private closed = false
  private readonly onMessage = (message: unknown): void => {
    const m = message as { sy?: string; id?: number; revision?: number; ok?: boolean; value?: unknown; error?: { code: string; message: string } } | null
    if (m?.sy === 'store-change' && typeof m.revision === 'number') {
      for (const l of this.changeListeners) l(m.revision)
    } else if (m?.sy === 'store-reply' && typeof m.id === 'number') {
      const call = this.pending.get(m.id)
      if (!call) return
      this.pending.delete(m.id)
      clearTimeout(call.timer)
      if (m.ok) call.resolve(m.value)
      else call.reject(new SwitchyardError(m.error?.code === 'STORE_UNAVAILABLE' ? 'STORE_UNAVAILABLE' : 'INTERNAL', m.error?.message))
    }
  }

  constructor() {
    if (typeof process.send !== 'function') throw new Error('IpcStore needs an IPC channel to the primary (cluster worker)')
    process.on('message', this.onMessage)
  }

  get connected(): boolean {
    return !this.closed && process.connected
  }

  private call<T>(op: Op, ...args: unknown[]): Promise<T> {
    if (!this.connected) return Promise.reject(new SwitchyardError('STORE_UNAVAILABLE', 'the primary process is gone'))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new SwitchyardError('STORE_UNAVAILABLE', `the primary did not answer ${op} within ${CALL_TIMEOUT_MS} ms`))
      }, CALL_TIMEOUT_MS)
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
      const msg: CallMessage = { sy: 'store-call', id, op, args }
      process.send!(msg)
    })
  }

  async open(): Promise<void> {}
  load(): Promise<State | null> {
    return this.call('load')
  }
  revision(): Promise<number | null> {
    return this.call('revision')
  }
  head(): Promise<StoreHead | null> {
    return this.call('head')
  }
  /** `touched` goes through to the primary's store, so it writes and logs only those resources. */
  commit(next: State, event: AuditEvent, expected: number, touched?: Touched, digest?: string): Promise<CommitResult> {
    // IPC encodes arguments as JSON: an absent argument must stay absent, not become null.
    const args: unknown[] = [next, event, expected]
    if (touched !== undefined || digest !== undefined) args.push(touched)
    if (digest !== undefined) args.push(digest)
    return this.call('commit', ...args)
  }
  /** Answered from the primary's change log: a worker receives only the changed resources. */
  changesSince(revision: number): Promise<Delta | null> {
    return this.call('changesSince', revision)
  }
  seed(state: State, digest?: string): Promise<boolean> {
    return digest === undefined ? this.call('seed', state) : this.call('seed', state, digest)
  }
  onChange(listener: (revision: number) => void): void {
    this.changeListeners.add(listener)
  }
  /** The IPC channel lives as long as the worker; losing it ends the worker. */
  onConnectionChange(_listener: (connected: boolean) => void): void {}
  events(limit: number): Promise<AuditEvent[]> {
    return this.call('events', limit)
  }
  register(info: Omit<InstanceInfo, 'lastSeen'>, ttlMs: number): Promise<void> {
    return this.call('register', info, ttlMs)
  }
  unregister(id: string): Promise<void> {
    return this.call('unregister', id)
  }
  instances(): Promise<InstanceInfo[]> {
    return this.call('instances')
  }
  lease(name: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.call('lease', name, holder, ttlMs)
  }
  releaseLease(name: string, holder: string): Promise<boolean> {
    return this.call('releaseLease', name, holder)
  }
  leaseHolder(name: string): Promise<string | null> {
    return this.call('leaseHolder', name)
  }
  /** Each worker's figures go to the primary's store, so any worker sums the whole group. */
  pushTelemetry(sample: TelemetrySample, retainMs: number): Promise<void> {
    return this.call('pushTelemetry', sample, retainMs)
  }
  telemetry(sinceMs: number): Promise<TelemetrySample[]> {
    return this.call('telemetry', sinceMs)
  }
  async close(): Promise<void> {
    this.closed = true
    process.off('message', this.onMessage)
    for (const [, call] of this.pending) {
      clearTimeout(call.timer)
      call.reject(new SwitchyardError('STORE_UNAVAILABLE', 'the store is closed'))
    }
    this.pending.clear()
  }
}
