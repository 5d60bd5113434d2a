/** Rollout webhooks against a real HTTP receiver: body, signature, retries, give-up, timeout, filter. */
import { createHmac } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { newRollout, withDefaults } from '../src/rollout/plan.js'
import { Notifier } from '../src/rollout/notify.js'
import type { Notify, Rollout } from '../src/rollout/schema.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger } from './helpers/log.js'

interface Hit {
  headers: IncomingHttpHeaders
  body: string
}

/** A receiver answering each request with `answer(n)` (n = 1 for the first). */
async function receiver(answer: (n: number, res: ServerResponse) => void): Promise<{ url: string; hits: Hit[] }> {
  const hits: Hit[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => (body += d))
    req.on('end', () => {
      hits.push({ headers: req.headers, body })
      answer(hits.length, res)
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  onTestFinished(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits }
}

function rolloutWith(notify: Notify[]): Rollout {
  return newRollout(withDefaults({ route: 'api', from: 'v1', to: 'v2', notify }, 'r1'), Date.now())
}

function notifier() {
  const log = memoryLogger()
  const n = new Notifier({ log: log.logger, retryDelaysMs: [20, 40, 80] })
  onTestFinished(() => n.close())
  return { n, log }
}

describe('Notifier', () => {
  it('POSTs the event as JSON, signed with HMAC-SHA256 of the timestamp and the exact body', async () => {
    const rx = await receiver((_n, res) => res.end('ok'))
    const { n } = notifier()
    const r = rolloutWith([{ url: rx.url, secret: 'top-secret' }])
    n.notify(r, 'started', 'hello')
    await eventually(() => expect(n.sent).toBe(1))
    const [hit] = rx.hits
    expect(hit!.headers['content-type']).toBe('application/json')
    expect(hit!.headers['x-switchyard-event']).toBe('started')
    const timestamp = String(hit!.headers['x-switchyard-timestamp'])
    expect(Math.abs(Number(timestamp) - Date.now() / 1000)).toBeLessThan(60)
    expect(hit!.headers['x-switchyard-signature']).toBe('sha256=' + createHmac('sha256', 'top-secret').update(`${timestamp}.${hit!.body}`).digest('hex'))
    expect(JSON.parse(hit!.body)).toMatchObject({ event: 'started', rollout: 'r1', route: 'api', from: 'v1', to: 'v2', phase: 'progressing', weight: 10, weights: { v1: 90, v2: 10 }, message: 'hello', analysis: null })
  })

  it('retries after a 500 and then delivers; no signature without a secret', async () => {
    const rx = await receiver((k, res) => {
      res.statusCode = k === 1 ? 500 : 200
      res.end()
    })
    const { n } = notifier()
    n.notify(rolloutWith([{ url: rx.url }]), 'promoted', 'done')
    await eventually(() => expect(n.sent).toBe(1))
    expect(rx.hits).toHaveLength(2)
    expect(rx.hits[1]!.body).toBe(rx.hits[0]!.body)
    expect(rx.hits[0]!.headers['x-switchyard-signature']).toBeUndefined()
    expect(n.failed).toBe(0)
  })

  it('gives up after 4 attempts, logs it without the secret and counts it', async () => {
    const rx = await receiver((_k, res) => {
      res.statusCode = 503
      res.end()
    })
    const { n, log } = notifier()
    n.notify(rolloutWith([{ url: rx.url, secret: 'do-not-log-me' }]), 'failed', 'rolled back')
    await eventually(() => expect(n.failed).toBe(1))
    expect(rx.hits).toHaveLength(4)
    expect(n.sent).toBe(0)
    const lines = JSON.stringify(log.lines())
    expect(lines).toContain('webhook failed; giving up')
    expect(lines).not.toContain('do-not-log-me')
  })

  it('a receiver slower than the timeout counts as a failure', async () => {
    const rx = await receiver(() => {}) // never answers
    const { n } = notifier()
    n.notify(rolloutWith([{ url: rx.url, timeoutMs: 50 }]), 'step', 'step 2')
    await eventually(() => expect(n.failed).toBe(1), { timeoutMs: 5000 })
    expect(rx.hits).toHaveLength(4)
  })

  it('sends only the events an entry lists; by default all but analysis', async () => {
    const rx = await receiver((_k, res) => res.end())
    const { n } = notifier()
    const r = rolloutWith([{ url: rx.url }, { url: rx.url, events: ['analysis'] }])
    n.notify(r, 'analysis', 'a') // second entry only
    n.notify(r, 'paused', 'p') // first entry only
    await eventually(() => expect(n.sent).toBe(2))
    expect(rx.hits.map((h) => h.headers['x-switchyard-event']).sort()).toEqual(['analysis', 'paused'])
  })
})
