/** A bounded load loop for "zero failed requests" tests. */
import { request, type Dispatcher } from 'undici'
import { agent } from './client.js'

export interface Load {
  /** every status seen, or the error message of a request that failed */
  readonly results: (number | string)[]
  count(): number
  stop(): Promise<(number | string)[]>
}

/**
 * Runs `workers` concurrent request loops against `url` until `stop()`, or for `maxMs` at most
 * (a bound on every loop, whatever happens), on keep-alive connections of `dispatcher`.
 */
export function startLoad(
  url: string,
  opts: { workers: number; path?: () => string; dispatcher?: Dispatcher; maxMs?: number },
): Load {
  const results: (number | string)[] = []
  let running = true
  const deadline = Date.now() + (opts.maxMs ?? 20_000)
  const loops = Array.from({ length: opts.workers }, async () => {
    while (running && Date.now() < deadline) {
      try {
        // Bounded like a real client's: a request left unanswered is recorded as failed, never a loop (and the test's clean-up) hung on it.
        const res = await request(url + (opts.path?.() ?? '/'), { dispatcher: opts.dispatcher ?? agent, headersTimeout: 10_000, bodyTimeout: 10_000 })
        await res.body.dump()
        results.push(res.statusCode)
      } catch (err) {
        results.push(String((err as Error).message))
      }
    }
  })
  return {
    results,
    count: () => results.length,
    async stop() {
      running = false
      await Promise.all(loops)
      return results
    },
  }
}
