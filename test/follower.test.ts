/**
 * The follower alone, on a store whose connection flips: a real MemoryStore behind a switch
 * that makes every call fail while "down" and holds back change notices while "unsubscribed",
 * the two halves of a Redis connection. Whatever the order in which a connection comes back,
 * and however many syncs were asked for while it was down, the follower ends on the store's
 * revision — the regression tests of a wedged sync that once left an instance behind for good.
 */
import type { TelemetrySample } from '../src/telemetry/types.js'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { Follower } from '../src/control/follower.js'
import { Dataplane } from '../src/dataplane/server.js'
import { SwitchyardError } from '../src/errors.js'
import { silentLogger } from '../src/log.js'
import { MemoryBacking, MemoryStore } from '../src/store/memory.js'
import type { Touched } from '../src/state/delta.js'
import type { AuditEvent, Store } from '../src/store/store.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger } from './helpers/log.js'

function state(revision: number, v1 = 100): State {
  return {
    revision,
    upstreams: { v1: { targets: [{ id: 'a', url: 'http://127.0.0.1:1', state: 'active' }] }, v2: { targets: [] } },
    routes: [{ name: 'api', split: { v1, v2: 100 - v1 } }],
    flags: {},
    rollouts: {},
  }
}

const event = (revision: number): AuditEvent => ({ revision, at: new Date().toISOString(), actor: 't', reason: null, action: 'x', target: 'x', before: null, after: null })

/** A MemoryStore behind a connection switch (`up`) and a subscription switch (`subscribed`). */
class FlippingStore implements Store {
  readonly kind = 'memory' as const
  up = true
  subscribed = true
  private readonly inner: MemoryStore
  private readonly changeListeners: ((r: number) => void)[] = []
  private readonly connectionListeners: ((c: boolean) => void)[] = []

  constructor(backing: MemoryBacking) {
    this.inner = new MemoryStore(backing)
    this.inner.onChange((r) => {
      if (this.subscribed) for (const l of this.changeListeners) l(r)
    })
  }
  get connected(): boolean {
    return this.up
  }
  /** The command half drops or comes back; tells the connection listeners like RedisStore does. */
  setUp(up: boolean): void {
    this.up = up
    for (const l of this.connectionListeners) l(up)
  }
  /** The subscriber half drops or comes back; a resubscribe asks for a reload (-1), like RedisStore. */
  setSubscribed(subscribed: boolean): void {
    this.subscribed = subscribed
    if (subscribed) for (const l of this.changeListeners) l(-1)
  }
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    await new Promise((r) => setTimeout(r, 1)) // every call crosses an event-loop turn, like a socket
    if (!this.up) throw new SwitchyardError('STORE_UNAVAILABLE', 'down')
    return fn()
  }
  open = () => this.guard(() => this.inner.open())
  load = () => this.guard(() => this.inner.load())
  /** While set, revision() answers the value it read at call time only once this settles. */
  holdRevision: Promise<void> | null = null
  revision = () =>
    this.guard(async () => {
      const value = await this.inner.revision()
      if (this.holdRevision) await this.holdRevision
      return value
    })
  head = () =>
    this.guard(async () => {
      const value = await this.inner.head()
      if (this.holdRevision) await this.holdRevision
      return value
    })
  /** Held like revision(): a changes read crosses notices the same way. */
  changesSince = (since: number) =>
    this.guard(async () => {
      const value = await this.inner.changesSince(since)
      if (this.holdRevision) await this.holdRevision
      return value
    })
  commit = (next: State, e: AuditEvent, expected: number, touched?: Touched, digest?: string) => this.guard(() => this.inner.commit(next, e, expected, touched, digest))
  seed = (s: State, digest?: string) => this.guard(() => this.inner.seed(s, digest))
  onChange = (l: (r: number) => void) => void this.changeListeners.push(l)
  onConnectionChange = (l: (c: boolean) => void) => void this.connectionListeners.push(l)
  events = (n: number) => this.guard(() => this.inner.events(n))
  register = (...a: Parameters<Store['register']>) => this.guard(() => this.inner.register(...a))
  unregister = (id: string) => this.guard(() => this.inner.unregister(id))
  instances = () => this.guard(() => this.inner.instances())
  lease = (...a: Parameters<Store['lease']>) => this.guard(() => this.inner.lease(...a))
  releaseLease = (...a: Parameters<Store['releaseLease']>) => this.guard(() => this.inner.releaseLease(...a))
  leaseHolder = (n: string) => this.guard(() => this.inner.leaseHolder(n))
  pushTelemetry = (sample: TelemetrySample, retainMs: number) => this.guard(() => this.inner.pushTelemetry(sample, retainMs))
  telemetry = (sinceMs: number) => this.guard(() => this.inner.telemetry(sinceMs))
  close = () => this.inner.close()
}

async function setup(resyncMs = 20, log = silentLogger) {
  const backing = new MemoryBacking()
  const writer = new MemoryStore(backing) // another instance of the fleet, writing
  const store = new FlippingStore(backing)
  const dataplane = new Dataplane()
  const follower = new Follower({ store, dataplane, seed: state(1), log, resyncMs, behindAlertMs: 100 })
  onTestFinished(async () => {
    follower.close()
    await dataplane.shutdown(0)
  })
  await follower.start()
  let revision = 1
  const commit = async (v1: number) => {
    revision++
    expect(await writer.commit(state(revision, v1), event(revision), revision - 1)).toMatchObject({ ok: true })
    return revision
  }
  return { store, writer, follower, dataplane, commit, backing }
}

describe('the follower on a store whose connection flips', () => {
  it('a sync asked for while the store is down settles, and does not keep the next ones from running', async () => {
    const { store, follower, commit } = await setup(60_000)
    store.setUp(false)
    // The exact wedge: a sync that ends before its first await, while disconnected.
    await follower.sync()
    await follower.sync()
    store.up = true // back without telling anyone: only an explicit sync can notice
    const r = await commit(30)
    await follower.sync()
    expect(follower.state.revision).toBe(r)
  })

  it.each([
    ['command connection first, then the resubscribe', ['up', 'subscribed']],
    ['resubscribe first, then the command connection', ['subscribed', 'up']],
  ] as const)('an outage during which writes happen and checks fire: %s', async (_name, order) => {
    const { store, follower, dataplane, commit } = await setup(20)
    store.subscribed = false
    store.setUp(false)
    const r1 = await commit(40)
    // Several periodic checks (every 20 ms) run during the outage: the passage of time is the point here.
    await new Promise((res) => setTimeout(res, 150))
    const r2 = await commit(20)
    expect(r2).toBe(r1 + 1)
    for (const step of order) {
      if (step === 'up') store.setUp(true)
      else store.setSubscribed(true)
    }
    await eventually(() => expect(follower.state.revision).toBe(r2), { timeoutMs: 1_000 })
    expect(dataplane.table.revision).toBe(r2)
    expect(follower.behindMs()).toBe(0)
  })

  it('a notice heard while commands fail is not lost: it is applied once commands work again', async () => {
    const { store, follower, commit } = await setup(60_000)
    store.setUp(false)
    const r = await commit(10) // notice delivered (subscribed), commands down
    await new Promise((res) => setTimeout(res, 20))
    expect(follower.state.revision).toBe(1)
    store.setUp(true)
    await eventually(() => expect(follower.state.revision).toBe(r), { timeoutMs: 1_000 })
  })

  it('many syncs while one runs: all settle, and the last write is applied', async () => {
    const { follower, commit } = await setup(60_000)
    const pending: Promise<void>[] = []
    let last = 1
    for (let i = 0; i < 20; i++) {
      last = await commit(i)
      pending.push(follower.sync())
    }
    await Promise.all(pending)
    expect(follower.state.revision).toBe(last)
  })

  it('behind the store while down is measured once the store is seen ahead, and reported after the threshold', async () => {
    const log = memoryLogger()
    const { store, follower, commit } = await setup(20, log.logger)
    store.up = false // commands fail; notices still come (subscribed)
    const r = await commit(50)
    await eventually(() => expect(follower.behindMs()).toBeGreaterThan(100), { timeoutMs: 2_000 })
    await eventually(() => expect(log.find('behind the store')).toHaveLength(1))
    expect(log.find('behind the store')[0]).toMatchObject({ appliedRevision: 1, storeRevision: r, connected: false })
    expect(follower.behindAlerts).toBe(1)
    store.setUp(true)
    await eventually(() => expect(follower.state.revision).toBe(r))
    expect(follower.behindMs()).toBe(0)
    expect(log.find('caught up')).toHaveLength(1)
  })

  it('a revision read that crosses a newer notice does not erase when the newer revision was first seen', async () => {
    const { store, follower, commit } = await setup(60_000)
    let release = () => {}
    store.holdRevision = new Promise<void>((r) => (release = r))
    const pending = follower.sync() // its read answers revision 1, held back
    await new Promise((r) => setTimeout(r, 10))
    const before = Date.now()
    const r2 = await commit(60) // the notice of revision 2 arrives while the read is held
    await eventually(() => expect(follower.newerKnownSince(1)).not.toBeNull())
    const seen = follower.newerKnownSince(1)!
    expect(seen).toBeGreaterThanOrEqual(before)
    await new Promise((r) => setTimeout(r, 20))
    store.holdRevision = null
    release() // the stale "1" arrives now: it must not look like a store that went back
    await pending
    await eventually(() => expect(follower.state.revision).toBe(r2))
    expect(follower.newerKnownSince(1)).toBe(seen)
  })

  it('an empty store (restarted empty) is re-seeded with the applied state, never an older one', async () => {
    const { store, follower, commit, backing } = await setup(20)
    const r = await commit(70)
    await eventually(() => expect(follower.state.revision).toBe(r))
    store.setUp(false)
    backing.stateJson = null
    backing.revision = null
    store.setUp(true)
    await eventually(() => expect(backing.revision).toBe(r))
    expect(JSON.parse(backing.stateJson!)).toEqual(state(r, 70))
  })
})
