/**
 * `switchyard ctl rollout ...` and `switchyard ctl events`: start and steer rollouts from a
 * terminal or a CI pipeline. `start --wait` and `status --watch` poll the admin API; in a
 * terminal `--watch` redraws one line per rollout, piped it prints a line per change, so a CI
 * log stays readable.
 */
import { UsageError } from './args.js'
import { out, parseDuration, printWrite, type Options } from './ctl-commands.js'
import { call, type CtlOptions } from './ctl-http.js'

const enc = encodeURIComponent

export const ROLLOUT_USAGE: Record<string, string> = {
  start: `usage: switchyard ctl rollout start --route R --from V1 --to V2 [options]
  --steps 10,50,100      canary: the weights of --to, in order (default 10,50,100); shadow:20 first = a shadow
                         step: 20 % of requests copied to --to and compared while it serves no user
  --pause 30s            how long each step lasts at least (default 60s; manual = until 'rollout resume')
  --strategy S           canary (default) or blue-green (one switch after the preview passes)
  --preview-header H     blue-green: requests with H: <to> reach --to before the switch (default x-switchyard-preview)
  --interval 10s         time between analyses, and the window each one looks at (default 10s)
  --min-requests N       fewer requests to --to in a window is inconclusive: the rollout waits (default 50)
  --max-error-rate X     highest share of 5xx and proxy errors on --to (default 0.01)
  --max-p99 500ms        highest p99 latency of --to (default: none)
  --failure-limit N      failed analyses tolerated before the rollout fails (default 0)
  --max-mismatch-rate X  shadow steps: highest share of compared answers that differ (default 0.01)
  --ignore a,b           shadow steps: JSON field names the comparison ignores (ids, timestamps)
  --id ID                the rollout's id (default <route>-<time>)
  --wait                 follow it to the end: exit 0 when promoted, 1 when failed or aborted
  plus the ctl options (--admin, --token, --reason, --json ...)`,
  status: `usage: switchyard ctl rollout status [ID] [--watch]
  without ID: every rollout in progress (or the last one when none is)
  --watch                follow live: one redrawn line per rollout in a terminal, a line per change when piped;
                         ends when the rollouts end (exit 0 promoted, 1 failed or aborted)`,
  list: `usage: switchyard ctl rollout list
  every rollout, newest first, finished ones too`,
  pause: `usage: switchyard ctl rollout pause ID
  hold the current weight; the analysis goes on and a failure still rolls back`,
  resume: `usage: switchyard ctl rollout resume ID
  continue a paused rollout (a step without a pause moves on to the next step)`,
  promote: `usage: switchyard ctl rollout promote ID
  end the rollout now at 100 % of --to`,
  abort: `usage: switchyard ctl rollout abort ID
  end the rollout and send the route back to 100 % of --from`,
}

export const EVENTS_USAGE = `usage: switchyard ctl events [--limit N] [--follow]
  the audit log, oldest of the last N first (default 20)
  --follow               keep printing new events as they come (until interrupted)`

/** Options each rollout subcommand accepts besides the ctl ones. */
export const ROLLOUT_OPTIONS: Record<string, string[]> = {
  start: ['route', 'from', 'to', 'steps', 'pause', 'strategy', 'preview-header', 'interval', 'min-requests', 'max-error-rate', 'max-p99', 'failure-limit', 'max-mismatch-rate', 'ignore', 'id', 'wait'],
  status: ['watch'],
  list: [],
  pause: [],
  resume: [],
  promote: [],
  abort: [],
}

interface Side {
  requests: number
  errorRate: number | null
  p99Ms: number | null
}

interface RolloutView {
  id: string
  route: string
  from: string
  to: string
  strategy: string
  phase: string
  stepIndex: number
  weight: number
  message: string
  stepStartedAt: number
  updatedAt: number
  createdAt: number
  spec: { steps?: { weight: number }[] }
  analysis: (Side & { verdict: string; from?: Side; shadow?: { compared: number; mismatchRate: number | null } }) | null
}

const FINISHED = new Set(['promoted', 'aborted', 'failed'])


const pctText = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${(x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 1)}%`)
const msText = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${Math.round(x)}ms`)
const secs = (ms: number) => (ms < 60_000 ? `${Math.round(ms / 1000)}s` : `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`)

/**
 * One line: `c1 api v1→v2 progressing step 2/3 v1=50 v2=50 | v2 err 0.0% p99 12ms | v1 err 0.0% p99 3ms | pass | 12s in step`.
 * The figures are the last analysis (of the window that ended then).
 */
export function rolloutLine(r: RolloutView, now = Date.now()): string {
  const total = r.strategy === 'blue-green' ? 1 : (r.spec.steps?.length ?? 0)
  const step = r.strategy === 'blue-green' ? (r.weight === 100 ? 'switched' : 'preview') : `step ${Math.min(r.stepIndex + 1, total)}/${total}`
  const a = r.analysis
  const parts = [
    `${r.id} ${r.route} ${r.from}→${r.to} ${r.phase} ${step} ${r.from}=${100 - r.weight} ${r.to}=${r.weight}`,
    `${r.to} err ${pctText(a?.errorRate)} p99 ${msText(a?.p99Ms)} (${a?.requests ?? 0} req)`,
    `${r.from} err ${pctText(a?.from?.errorRate)} p99 ${msText(a?.from?.p99Ms)} (${a?.from?.requests ?? 0} req)`,
    ...(a?.shadow ? [`shadow: ${a.shadow.compared} compared, mismatch ${pctText(a.shadow.mismatchRate)}`] : []),
    a?.verdict ?? 'no analysis yet',
    FINISHED.has(r.phase) ? r.message : `${secs(now - r.stepStartedAt)} in step`,
  ]
  return parts.join(' | ')
}

function positiveInt(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined
  if (!/^[0-9]{1,9}$/.test(text) || Number(text) < 1) throw new UsageError(`${what} must be a positive integer, not ${JSON.stringify(text)}`)
  return Number(text)
}

function rate(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined
  if (!/^(0(\.[0-9]+)?|1(\.0+)?)$/.test(text)) throw new UsageError(`${what} must be a number from 0 to 1, not ${JSON.stringify(text)}`)
  return Number(text)
}

/** The POST /api/rollouts body from `start`'s options. */
export function startBody(o: Options): Record<string, unknown> {
  const need = (name: string) => {
    const v = o.get(name)
    if (v === undefined) throw new UsageError(`rollout start needs --${name}`)
    return v
  }
  const strategy = o.get('strategy') ?? 'canary'
  if (strategy !== 'canary' && strategy !== 'blue-green') throw new UsageError(`--strategy must be canary or blue-green, not ${JSON.stringify(strategy)}`)
  const body: Record<string, unknown> = { route: need('route'), from: need('from'), to: need('to'), strategy }
  const id = o.get('id')
  if (id !== undefined) body['id'] = id
  const pause = o.get('pause')
  const pauseMs = pause === 'manual' ? undefined : pause === undefined ? 60_000 : parseDuration(pause, '--pause')
  if (strategy === 'canary') {
    const steps = (o.get('steps') ?? '10,50,100').split(',').map((w) => {
      const m = /^(shadow:)?([0-9]{1,3})$/.exec(w)
      if (m === null || Number(m[2]) > 100) throw new UsageError(`--steps must be weights from 0 to 100 (or shadow:N) separated by commas, not ${JSON.stringify(o.get('steps'))}`)
      return m[1] === undefined ? { weight: Number(m[2]) } : { shadow: Number(m[2]) }
    })
    body['steps'] = steps.map((step) => (pauseMs === undefined ? step : { ...step, pauseMs }))
    const ignore = o.get('ignore')
    if (ignore !== undefined) body['shadow'] = { ignore: ignore.split(',').filter((x) => x !== '') }
  } else {
    if (o.get('steps') !== undefined) throw new UsageError('--steps is for canary rollouts; blue-green switches once')
    const header = o.get('preview-header')
    if (pauseMs === undefined) throw new UsageError('--pause manual is for canary steps; a blue-green switch waits for its analysis (or rollout promote)')
    body['preview'] = { ...(header !== undefined ? { header } : {}), pauseMs }
  }
  const analysis: Record<string, number> = {}
  const interval = o.get('interval')
  if (interval !== undefined) analysis['intervalMs'] = parseDuration(interval, '--interval')
  const minRequests = positiveInt(o.get('min-requests'), '--min-requests')
  if (minRequests !== undefined) analysis['minRequests'] = minRequests
  const maxErrorRate = rate(o.get('max-error-rate'), '--max-error-rate')
  if (maxErrorRate !== undefined) analysis['maxErrorRate'] = maxErrorRate
  const maxP99 = o.get('max-p99')
  if (maxP99 !== undefined) analysis['maxP99Ms'] = parseDuration(maxP99, '--max-p99')
  const maxMismatchRate = rate(o.get('max-mismatch-rate'), '--max-mismatch-rate')
  if (maxMismatchRate !== undefined) analysis['maxMismatchRate'] = maxMismatchRate
  const failureLimit = o.get('failure-limit')
  if (failureLimit !== undefined) {
    if (!/^[0-9]{1,4}$/.test(failureLimit)) throw new UsageError(`--failure-limit must be a whole number, not ${JSON.stringify(failureLimit)}`)
    analysis['failureLimit'] = Number(failureLimit)
  }
  if (Object.keys(analysis).length > 0) body['analysis'] = analysis
  return body
}

async function fetchRollout(opts: CtlOptions, id: string): Promise<RolloutView> {
  return (await call(opts, { method: 'GET', path: `/api/rollouts/${enc(id)}` })).body as RolloutView
}

async function fetchAll(opts: CtlOptions): Promise<RolloutView[]> {
  return ((await call(opts, { method: 'GET', path: '/api/rollouts' })).body as { rollouts: RolloutView[] }).rollouts
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Exit code of a finished rollout: 0 promoted, 1 otherwise. */
const exitOf = (rs: RolloutView[]) => (rs.every((r) => r.phase === 'promoted') ? 0 : 1)

/**
 * Follows rollouts `ids` until every one is finished: in a terminal one line per rollout,
 * redrawn in place; piped, a line whenever a rollout's line changes (not every poll).
 */
async function watch(opts: CtlOptions, ids: string[], pollMs: number): Promise<number> {
  const tty = process.stdout.isTTY === true && !opts.json
  let drawn = 0
  const last = new Map<string, string>()
  for (;;) {
    const rs = await Promise.all(ids.map((id) => fetchRollout(opts, id)))
    if (opts.json) {
      for (const r of rs) if (last.get(r.id) !== JSON.stringify(r)) out(JSON.stringify(r))
      for (const r of rs) last.set(r.id, JSON.stringify(r))
    } else if (tty) {
      // back to the first line drawn, then each line cleared and rewritten
      if (drawn > 0) process.stdout.write(`\x1b[${drawn}F`)
      for (const r of rs) process.stdout.write(`\x1b[2K${rolloutLine(r)}\n`)
      drawn = rs.length
    } else {
      for (const r of rs) {
        // without the seconds in step, so an unchanged rollout prints nothing new
        const key = rolloutLine(r, r.stepStartedAt)
        if (last.get(r.id) !== key) out(rolloutLine(r))
        last.set(r.id, key)
      }
    }
    if (rs.every((r) => FINISHED.has(r.phase))) {
      if (!opts.json) for (const r of rs) out(`${r.id}: ${r.message}`)
      return exitOf(rs)
    }
    await sleep(pollMs)
  }
}

export async function rollout(opts: CtlOptions, pos: string[], o: Options): Promise<number> {
  const [sub, ...rest] = pos
  const pollMs = 500
  switch (sub) {
    case 'start': {
      if (rest.length > 0) throw new UsageError('rollout start takes options only (--route, --from, --to ...)')
      const wait = o.get('wait')
      if (wait !== undefined && wait !== 'true') throw new UsageError(`--wait takes no value for rollout start (it waits until the rollout ends), not ${JSON.stringify(wait)}`)
      const answer = await call(opts, { method: 'POST', path: '/api/rollouts', body: startBody(o), write: true })
      const r = answer.body as RolloutView
      if (!o.has('wait')) {
        const code = printWrite(opts, answer)
        if (!opts.json) out(`started: ${r.id} (${r.message})`)
        return code
      }
      if (!opts.json) out(`started: ${r.id}`)
      return watch(opts, [r.id], pollMs)
    }
    case 'status': {
      if (rest.length > 1) throw new UsageError('expected: switchyard ctl rollout status [ID] [--watch]')
      let ids = rest
      if (ids.length === 0) {
        const all = await fetchAll(opts)
        const active = all.filter((r) => !FINISHED.has(r.phase))
        ids = (active.length > 0 ? active : all.slice(0, 1)).map((r) => r.id)
        if (ids.length === 0) {
          out(opts.json ? '[]' : 'no rollouts')
          return 0
        }
      }
      if (o.has('watch')) return watch(opts, ids, pollMs)
      const rs = await Promise.all(ids.map((id) => fetchRollout(opts, id)))
      if (opts.json) out(JSON.stringify(rs.length === 1 ? rs[0] : rs, null, 2))
      else for (const r of rs) out(`${rolloutLine(r)}\n  ${r.message}`)
      return 0
    }
    case 'list': {
      if (rest.length > 0) throw new UsageError('expected: switchyard ctl rollout list')
      const all = await fetchAll(opts)
      if (opts.json) out(JSON.stringify(all, null, 2))
      else out(all.length === 0 ? 'no rollouts' : all.map((r) => rolloutLine(r)).join('\n'))
      return 0
    }
    case 'pause':
    case 'resume':
    case 'promote':
    case 'abort': {
      if (rest.length !== 1) throw new UsageError(`expected: switchyard ctl rollout ${sub} ID`)
      const answer = await call(opts, { method: 'POST', path: `/api/rollouts/${enc(rest[0]!)}/${sub}`, write: true })
      const code = printWrite(opts, answer)
      if (!opts.json) out(`${rest[0]}: ${(answer.body as RolloutView).message}`)
      return code
    }
  }
  throw new UsageError(`expected: switchyard ctl rollout start|status|list|pause|resume|promote|abort (got ${JSON.stringify(sub ?? '')})`)
}

interface AuditView {
  revision: number
  at: string
  actor: string
  reason: string | null
  action: string
  target: string
}

const eventLine = (e: AuditView) => `${e.at} r${e.revision} ${e.actor} ${e.action} ${e.target}${e.reason ? ` — ${e.reason}` : ''}`

/** `ctl events [--limit N] [--follow]`: oldest first, then (with --follow) new ones as they come. */
export async function events(opts: CtlOptions, pos: string[], o: Options): Promise<number> {
  if (pos.length > 0) throw new UsageError('expected: switchyard ctl events [--limit N] [--follow]')
  const limit = positiveInt(o.get('limit'), '--limit') ?? 20
  const read = async (n: number) => ((await call(opts, { method: 'GET', path: '/api/events', query: { limit: String(n) } })).body as { events: AuditView[] }).events
  const print = (es: AuditView[]) => {
    for (const e of [...es].reverse()) out(opts.json ? JSON.stringify(e) : eventLine(e))
  }
  const first = await read(limit)
  print(first)
  if (!o.has('follow')) return 0
  let seen = first[0]?.revision ?? 0
  for (;;) {
    await sleep(500)
    const fresh = (await read(1000)).filter((e) => e.revision > seen)
    if (fresh.length > 0) {
      print(fresh)
      seen = fresh[0]!.revision
    }
  }
}
