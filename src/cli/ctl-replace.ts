/** `switchyard ctl target replace`: starts a rolling replacement and, with --wait, follows it to its end. */
import { UsageError } from './args.js'
import { ApiError, call, type CtlOptions } from './ctl-http.js'
import { out, parseDuration, type Options } from './ctl-commands.js'

const WAIT_DEFAULT = '30m'
const WAIT_DEFAULT_MS = 30 * 60_000
const POLL_MS = 250
const enc = encodeURIComponent

export const REPLACE_USAGE = `usage: switchyard ctl target replace UPSTREAM URL... [options]
  Replaces the upstream's targets with URL... one step at a time: adds a new target, waits until
  it is healthy, drains an old one and removes it, until the upstream has exactly these targets.
  A target given as ID=URL gets that id (default host:port).
  --max-surge N          new targets added beyond the old count at a time (default 1)
  --max-unavailable N    how many fewer targets than wanted may serve meanwhile (default 0)
  --healthy-timeout 60s  a new target not healthy by then fails the replacement (default 60s)
  --drain-wait 30s       how long an old target may drain before it is removed anyway (default 30s)
  --wait [TIMEOUT]       follow it to its end (default up to ${WAIT_DEFAULT}): exit 0 succeeded, 1 failed or
                         still running at TIMEOUT
  --if-match REV         start it only if the state is still at revision REV
exit: 0 started (or succeeded with --wait), 1 refused, failed or timed out, 2 usage`


interface Replacement {
  id: string
  upstream: string
  phase: 'running' | 'succeeded' | 'failed'
  step: string
  done: number
  total: number
  message: string
}

function count(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined
  if (!/^[0-9]{1,4}$/.test(text)) throw new UsageError(`${what} must be a whole number, not ${JSON.stringify(text)}`)
  return Number(text)
}

/** `URL` or `ID=URL` → a target of the request body. */
function targetOf(arg: string): { url: string; id?: string } {
  const m = /^([^=/:]+)=(.+)$/.exec(arg)
  return m === null ? { url: arg } : { id: m[1]!, url: m[2]! }
}

const line = (r: Replacement) => `replacement ${r.id} of ${r.upstream}: ${r.phase}, ${r.done}/${r.total}, ${r.phase === 'running' ? r.step : r.message}`

export async function replace(opts: CtlOptions, pos: string[], o: Options): Promise<number> {
  const [upstream, ...urls] = pos
  if (upstream === undefined || urls.length === 0) throw new UsageError('expected: switchyard ctl target replace UPSTREAM URL... [--max-surge N] [--max-unavailable N] [--wait [TIMEOUT]]')
  const body: Record<string, unknown> = { targets: urls.map(targetOf) }
  const surge = count(o.get('max-surge'), '--max-surge')
  const unavailable = count(o.get('max-unavailable'), '--max-unavailable')
  if (surge !== undefined) body['maxSurge'] = surge
  if (unavailable !== undefined) body['maxUnavailable'] = unavailable
  const healthy = o.get('healthy-timeout')
  if (healthy !== undefined) body['healthyTimeoutMs'] = parseDuration(healthy, '--healthy-timeout')
  const drain = o.get('drain-wait')
  if (drain !== undefined) body['drainWaitMs'] = parseDuration(drain, '--drain-wait')
  const wait = o.get('wait')
  const waitMs = wait === undefined ? undefined : wait === 'true' ? WAIT_DEFAULT_MS : parseDuration(wait, '--wait')
  // The API refuses it too: a replacement is many writes, not one to see applied.
  if (opts.waitApplied !== undefined) throw new UsageError('--wait-applied does not apply to a replacement (many writes over minutes): use --wait to follow it to its end')

  const path = `/api/upstreams/${enc(upstream)}/replace`
  const started = (await call(opts, { method: 'POST', path, body, write: true })).body as Replacement
  if (waitMs === undefined) {
    out(opts.json ? JSON.stringify(started, null, 2) : line(started))
    return 0
  }
  if (!opts.json) out(line(started))
  const deadline = Date.now() + waitMs
  let last = started
  let shown = line(started)
  while (last.phase === 'running' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))))
    try {
      last = (await call(opts, { method: 'GET', path })).body as Replacement
    } catch (err) {
      // Another instance or worker may answer before the driver's record reached the registry.
      if (err instanceof ApiError && err.status === 404) continue
      throw err
    }
    // The record is the latest of the upstream: another one started meanwhile is not ours.
    if (last.id !== started.id) {
      process.stderr.write(`switchyard ctl: replacement ${started.id} was followed by ${last.id}; see switchyard ctl events\n`)
      return 1
    }
    if (!opts.json && line(last) !== shown) out((shown = line(last)))
  }
  if (opts.json) out(JSON.stringify(last, null, 2))
  if (last.phase === 'succeeded') return 0
  if (last.phase === 'failed') process.stderr.write(`switchyard ctl: replacement ${last.id} failed: ${last.message}\n`)
  else process.stderr.write(`switchyard ctl: replacement ${last.id} still running after ${wait === 'true' ? WAIT_DEFAULT : wait} (${last.step})\n`)
  return 1
}
