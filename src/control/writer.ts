/**
 * The one way to change the state: a revisioned, audited write. The admin API and the rollout
 * driver both come here with a pure mutation (mutations.ts) and an actor, so every change is
 * validated, compare-and-set in the store, recorded in the audit log and applied the same way.
 */
import { validateChange } from '../config/validate.js'
import { SwitchyardError } from '../errors.js'
import { digestAfter, stateDigest } from '../state/digest.js'
import type { State } from '../config/schema.js'
import type { Logger } from '../log.js'
import type { AuditEvent, Store } from '../store/store.js'
import type { Follower } from './follower.js'
import { draftOf, type Change, type Mutation } from './mutations.js'

export interface WriteOptions {
  /** If-Match: the write applies only at this revision (412 otherwise) */
  ifMatch?: number | undefined
  /** who asks: a token name, `anonymous`, `rollout:<id>` ... (audit log) */
  actor: string
  reason?: string | null | undefined
}

export interface Written<T> {
  revision: number
  change: Change<T>
}

const MAX_WRITE_ATTEMPTS = 8

export class Writer {
  constructor(
    private readonly store: Store,
    private readonly follower: Follower,
    private readonly log?: Logger,
  ) {}

  /**
   * Brings this instance up to the store's state (only the changes are fetched), applies
   * `mutation` to a draft of it, validates what it touched, and commits it with compare-and-set,
   * writing only the touched resources. Without If-Match a concurrent writer makes it catch up
   * and re-apply (optimistic concurrency); with If-Match it gets 412. A rejected write changes
   * nothing, revision included. Never starts from an empty (or older) store while this instance
   * holds a state: catching up re-seeds the store with that state first.
   */
  async write<T>(mutation: Mutation<T>, opts: WriteOptions): Promise<Written<T>> {
    const { store, follower } = this
    if (!store.connected) throw new SwitchyardError('STORE_UNAVAILABLE')
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      // Up to date as far as this instance knows: write at once (the commit's compare-and-set
      // catches what it does not know yet, and the next attempt syncs). Else, or for an If-Match
      // it does not know of, ask the store first. One round trip less before every write.
      if (attempt > 0 || !follower.current || (opts.ifMatch !== undefined && opts.ifMatch !== follower.state.revision)) await follower.sync()
      if (!store.connected) throw new SwitchyardError('STORE_UNAVAILABLE')
      const current = follower.state
      if (opts.ifMatch !== undefined && opts.ifMatch !== current.revision) {
        throw new SwitchyardError('REVISION_MISMATCH', `If-Match is ${opts.ifMatch}, the current revision is ${current.revision}`)
      }
      const { draft, change } = tryMutation(current, mutation)
      await this.checkCa(draft, change.touched)
      // The store holds a newer state that fails validation (written behind the writers' back):
      // this write replaces it whole, from the last good state, instead of losing every
      // compare-and-set to it. Followers reload it whole.
      const refused = follower.refusedRevision
      const base = refused ?? current.revision
      draft.revision = base + 1
      const event: AuditEvent = {
        revision: draft.revision,
        at: new Date().toISOString(),
        actor: opts.actor,
        reason: change.reason ?? opts.reason ?? null,
        action: change.action,
        target: change.target,
        before: change.before,
        after: change.after,
      }
      // The digest follows from the change alone; a whole replacement (of a refused state) is digested whole.
      const digest = refused === undefined ? digestAfter(follower.digest, current, draft, change.touched) : stateDigest(draft)
      const result = await store.commit(draft, event, base, refused === undefined ? change.touched : undefined, digest)
      if (result.ok) {
        // Applied here at once, so this instance's next read shows its own write.
        follower.offer(draft, change.touched, digest)
        // One line per change, on the instance that made it (the others log `applied state`).
        const { upstreams, routes, flags, rollouts } = change.touched
        this.log?.info(
          { revision: draft.revision, actor: event.actor, reason: event.reason, action: event.action, target: event.target, changed: { upstreams, routes, flags, rollouts } },
          `state changed: ${event.action} ${event.target} by ${event.actor}`,
        )
        return { revision: draft.revision, change }
      }
      if (result.reason === 'revision-mismatch' && opts.ifMatch !== undefined) {
        throw new SwitchyardError('REVISION_MISMATCH', `the revision moved to ${result.currentRevision}`)
      }
      // Lost a race, or the store emptied under us: catch up (re-seeding it) and retry.
    }
    throw new SwitchyardError('CONFLICT', 'too many concurrent writes; try again')
  }

  /**
   * What `write` would do, without writing (a dry run): the same catch-up, If-Match check,
   * mutation and validation, on the freshest state this instance can get; `revision` is the
   * state's, unchanged. With the store down it answers from the applied state.
   */
  async preview<T>(mutation: Mutation<T>, opts: Pick<WriteOptions, 'ifMatch'>): Promise<Written<T>> {
    const { store, follower } = this
    if (opts.ifMatch !== undefined) await this.expectRevision(opts.ifMatch)
    else if (store.connected && !follower.current) await follower.sync()
    const current = follower.state
    const { draft, change } = tryMutation(current, mutation)
    await this.checkCa(draft, change.touched)
    return { revision: current.revision, change }
  }

  /**
   * 400 VALIDATION_FAILED when a `tls.ca` file of an upstream the write touches cannot be used
   * (read asynchronously, like every file an admin write names; the follower keeps the
   * contents for the compile that applies the write).
   */
  private async checkCa(draft: State, touched: Change<unknown>['touched']): Promise<void> {
    if (touched.upstreams.length === 0) return
    const problems = await this.follower.readCaAhead(draft.upstreams, touched.upstreams)
    if (problems.length > 0) {
      throw new SwitchyardError('VALIDATION_FAILED', problems.map((p) => `${p.path}: ${p.message}`).join('; '), { details: problems })
    }
  }

  /**
   * 412 REVISION_MISMATCH unless the state is at `ifMatch` now: for what writes later, in steps
   * of its own (a rolling replacement), but was asked to start only at that revision.
   */
  async expectRevision(ifMatch: number): Promise<void> {
    const { store, follower } = this
    if (store.connected && (!follower.current || ifMatch !== follower.state.revision)) await follower.sync()
    const { revision } = follower.state
    if (ifMatch !== revision) throw new SwitchyardError('REVISION_MISMATCH', `If-Match is ${ifMatch}, the current revision is ${revision}`)
  }
}

/** `mutation` on a draft of `current`, validated: 400 with every problem of what it touched. */
function tryMutation<T>(current: State, mutation: Mutation<T>): { draft: State; change: Change<T> } {
  const draft = draftOf(current)
  const change = mutation(draft)
  const problems = validateChange(draft, change.touched, current)
  if (problems.length > 0) {
    throw new SwitchyardError('VALIDATION_FAILED', problems.map((p) => `${p.path}: ${p.message}`).join('; '), {
      details: problems,
    })
  }
  return { draft, change }
}
