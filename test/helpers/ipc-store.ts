/**
 * The IPC store (what `--workers N` workers use with the memory store) under the store contract:
 * this process plays the cluster primary, serving a real MemoryStore with `serveStore`; each
 * opened store is a child process holding a real `IpcStore`, driven from here over the same
 * IPC channel. Calls go here → child → IpcStore → (IPC) → here → MemoryStore and back.
 */
import type { TelemetrySample } from '../../src/telemetry/types.js'
import { fork, type ChildProcess } from 'node:child_process'
import type { Worker } from 'node:cluster'
import { fileURLToPath } from 'node:url'
import type { State } from '../../src/config/schema.js'
import { SwitchyardError, type ErrorCode } from '../../src/errors.js'
import { serveStore } from '../../src/store/ipc.js'
import { MemoryBacking, MemoryStore, type MemoryBackingOptions } from '../../src/store/memory.js'
import type { AuditEvent, CommitResult, Delta, InstanceInfo, Store, StoreHead, Touched } from '../../src/store/store.js'

const CHILD = fileURLToPath(new URL('./ipc-store-child.mjs', import.meta.url))

/** The primary's side of one world: one MemoryStore, served to every child. */
export class IpcWorld {
  readonly primary: MemoryStore
  readonly children = new Set<ChildProcess>()
  private readonly answer: ReturnType<typeof serveStore>

  constructor(options: MemoryBackingOptions = {}) {
    this.primary = new MemoryStore(new MemoryBacking(options))
    this.answer = serveStore(this.primary, () => [...this.children].map(asWorker))
  }

  async open(): Promise<ChildStore> {
    const child = fork(CHILD, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    const worker = asWorker(child)
    child.on('message', (m: unknown) => this.answer(worker, m))
    await new Promise<void>((resolve, reject) => {
      child.on('message', (m: { sy?: string }) => m?.sy === 'rpc-ready' && resolve())
      child.once('exit', (code) => reject(new Error(`ipc store child exited with ${code}`)))
    })
    return new ChildStore(child)
  }
}

function asWorker(child: ChildProcess): Worker {
  return { send: (m: unknown) => child.send(m as never), isConnected: () => child.connected } as unknown as Worker
}

/** The Store contract, each call run by the child's IpcStore. */
export class ChildStore implements Store {
  readonly kind = 'memory' as const
  private nextId = 1
  private closed = false
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  private readonly changeListeners = new Set<(revision: number) => void>()

  constructor(private readonly child: ChildProcess) {
    child.on('message', (m: { sy?: string; id?: number; ok?: boolean; value?: unknown; code?: string; message?: string; revision?: number }) => {
      if (m?.sy === 'rpc-change') for (const l of this.changeListeners) l(m.revision!)
      if (m?.sy !== 'rpc-reply') return
      const call = this.pending.get(m.id!)
      this.pending.delete(m.id!)
      if (m.ok) call?.resolve(m.value)
      else call?.reject(new SwitchyardError((m.code ?? 'INTERNAL') as ErrorCode, m.message))
    })
  }

  get connected(): boolean {
    return !this.closed && this.child.connected
  }

  private call<T>(op: string, ...args: unknown[]): Promise<T> {
    if (!this.child.connected) return Promise.reject(new SwitchyardError('STORE_UNAVAILABLE', 'the worker is gone'))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.child.send({ sy: 'rpc', id, op, args })
    })
  }

  open = () => this.call<void>('open')
  load = () => this.call<State | null>('load')
  revision = () => this.call<number | null>('revision')
  head = () => this.call<StoreHead | null>('head')
  commit = (next: State, event: AuditEvent, expected: number, touched?: Touched, digest?: string) =>
    digest !== undefined
      ? this.call<CommitResult>('commit', next, event, expected, touched ?? null, digest)
      : touched === undefined ? this.call<CommitResult>('commit', next, event, expected) : this.call<CommitResult>('commit', next, event, expected, touched)
  changesSince = (revision: number) => this.call<Delta | null>('changesSince', revision)
  seed = (state: State, digest?: string) => (digest === undefined ? this.call<boolean>('seed', state) : this.call<boolean>('seed', state, digest))
  onChange = (l: (revision: number) => void) => void this.changeListeners.add(l)
  onConnectionChange = () => {}
  events = (limit: number) => this.call<AuditEvent[]>('events', limit)
  register = (info: Omit<InstanceInfo, 'lastSeen'>, ttlMs: number) => this.call<void>('register', info, ttlMs)
  unregister = (id: string) => this.call<void>('unregister', id)
  instances = () => this.call<InstanceInfo[]>('instances')
  lease = (name: string, holder: string, ttlMs: number) => this.call<boolean>('lease', name, holder, ttlMs)
  releaseLease = (name: string, holder: string) => this.call<boolean>('releaseLease', name, holder)
  leaseHolder = (name: string) => this.call<string | null>('leaseHolder', name)
  pushTelemetry = (sample: TelemetrySample, retainMs: number) => this.call<void>('pushTelemetry', sample, retainMs)
  telemetry = (sinceMs: number) => this.call<TelemetrySample[]>('telemetry', sinceMs)

  /** Closes the child's IpcStore; the child then leaves. Later calls fail with STORE_UNAVAILABLE. */
  async close(): Promise<void> {
    if (this.closed) return
    const exited = new Promise<void>((resolve) => (this.child.exitCode !== null ? resolve() : this.child.once('exit', () => resolve())))
    if (this.child.connected) await this.call('close').catch(() => {})
    this.closed = true
    this.changeListeners.clear()
    await exited
  }
}
