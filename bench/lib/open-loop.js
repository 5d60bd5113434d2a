// Open-loop load for bench/deploy.js: requests are *scheduled* at a fixed rate, whatever the
// answers do (a slow or stuck proxy does not slow the load down, unlike a closed loop of N
// connections that each wait for their answer), and each request's latency runs from the
// time it was scheduled, so time spent queued behind a stall is counted (no coordinated
// omission, as in wrk2). Every answer is checked, and counted in the phase that was current
// when its request was sent.
import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import { Pool } from 'undici'
import { clock } from './deploy-helpers.js'

const TIMEOUT_MS = 10_000 // a request not answered within this counts as failed
const MAX_INFLIGHT = 4_000 // beyond this the generator waits (requests stay late, their latency shows it)
const EXAMPLES = 3 // example failures kept per reason and phase

/** A small deterministic PRNG (mulberry32), so two runs send the same mix. */
function prng (seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** `n` random request bodies of 1–16 KiB, each with its sha1: the backend hashes what it received. */
function makeBodies (n, rnd) {
  return Array.from({ length: n }, () => {
    const buf = randomBytes(1024 + Math.floor(rnd() * 15 * 1024))
    return { buf, sha1: createHash('sha1').update(buf).digest('hex') }
  })
}

/** One request on a fresh TCP connection (node:http, no agent, `Connection: close`). */
function freshRequest (url, method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path, headers: { ...headers, connection: 'close' }, agent: false })
    req.setTimeout(TIMEOUT_MS, () => req.destroy(Object.assign(new Error('no answer within 10 s'), { code: 'TIMEOUT' })))
    req.on('error', reject)
    req.on('response', (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }))
      res.on('error', reject)
      res.on('close', () => { if (!res.complete) reject(Object.assign(new Error('connection closed before the whole response'), { code: 'ABORTED' })) })
    })
    req.end(body)
  })
}

function newPhase (name, forbidden) {
  return { name, forbidden, requests: 0, failed: 0, reasons: new Map(), latencies: [], versions: {}, maxLagMs: 0, peakInflight: 0, start: performance.now(), end: 0 }
}

/**
 * Starts sending `rate` requests per second, split over `targets` ([{name, url, share}]):
 * `postShare` of them POST a 1–16 KiB body (the rest GET), `freshShare` on a new connection each
 * (the rest over `connections` keep-alive connections per target). A request fails when it
 * errors or times out, gets a non-2xx, or its answer does not check out (wrong request id, body
 * length or sha1, or a version the current phase forbids). `mark(name, {forbidden})` starts a
 * new phase; `stop()` stops sending, waits for the answers and returns the phases.
 */
export function startLoad ({ rate, targets, postShare = 0.5, freshShare = 0.2, connections = 16, seed = 42 }) {
  const rnd = prng(seed)
  const bodies = makeBodies(64, rnd)
  const ends = targets.map((t) => ({
    ...t,
    parsed: new URL(t.url),
    pool: new Pool(t.url, { connections, pipelining: 1, headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS })
  }))
  const phases = []
  let phase = null
  let sent = 0
  let inflight = 0
  let stopped = false
  const t0 = performance.now()
  const interval = 1000 / rate
  let idle = null // resolves stop() once the last answer is in

  function fail (ph, key, detail) {
    ph.failed++
    let r = ph.reasons.get(key)
    if (!r) ph.reasons.set(key, (r = { count: 0, examples: [] }))
    r.count++
    if (r.examples.length < EXAMPLES) r.examples.push(detail)
  }

  function check (ph, i, body, status, text) {
    if (status < 200 || status > 299) {
      let code = ''
      try { code = JSON.parse(text).error?.code ?? '' } catch {}
      return { key: `HTTP ${status}${code ? ` ${code}` : ''}`, detail: text.slice(0, 200) }
    }
    let j
    try { j = JSON.parse(text) } catch { return { key: 'answer is not the backend\'s JSON', detail: text.slice(0, 200) } }
    if (j.req !== String(i)) return { key: 'answer belongs to another request', detail: `sent ${i}, got ${j.req}` }
    const len = body ? body.buf.length : 0
    if (j.len !== len || (body && j.sha1 !== body.sha1)) return { key: 'request body arrived changed', detail: `sent ${len} B, backend got ${j.len} B (sha1 ${j.sha1 === body?.sha1 ? 'same' : 'differs'})` }
    ph.versions[j.v] = (ph.versions[j.v] ?? 0) + 1
    if (ph.forbidden.includes(j.v)) return { key: `answered by ${j.v}`, detail: `${j.name} answered; ${j.v} no longer had any share` }
    return null
  }

  async function one (i, scheduled) {
    const ph = phase
    const r = rnd()
    let acc = 0
    const end = ends.find((e) => r < (acc += e.share)) ?? ends[ends.length - 1]
    const body = rnd() < postShare ? bodies[Math.floor(rnd() * bodies.length)] : null
    const fresh = rnd() < freshShare
    const method = body ? 'POST' : 'GET'
    const path = `/api/orders/${i}`
    const headers = { 'x-bench-req': String(i), ...(body ? { 'content-type': 'application/octet-stream', 'content-length': String(body.buf.length) } : {}) }
    const what = `${method} ${fresh ? 'new connection' : 'keep-alive'} via ${end.name}, sent ${clock(Date.now())} (+${((performance.now() - ph.start) / 1000).toFixed(2)} s into the phase)`
    ph.maxLagMs = Math.max(ph.maxLagMs, performance.now() - scheduled)
    if (++inflight > ph.peakInflight) ph.peakInflight = inflight
    try {
      let status, text
      if (fresh) {
        ({ status, text } = await freshRequest(end.parsed, method, path, headers, body?.buf))
      } else {
        const res = await end.pool.request({ method, path, headers, body: body?.buf })
        status = res.statusCode
        text = await res.body.text()
      }
      ph.latencies.push(performance.now() - scheduled)
      const bad = check(ph, i, body, status, text)
      if (bad) fail(ph, bad.key, `${what}: ${bad.detail}`)
    } catch (err) {
      ph.latencies.push(performance.now() - scheduled)
      const code = err.code ?? err.name
      fail(ph, `${code}${err.message ? `: ${err.message}` : ''}`.slice(0, 120), what)
    } finally {
      ph.requests++
      if (--inflight === 0 && idle) idle()
    }
  }

  function tick () {
    if (stopped) return
    const due = Math.floor((performance.now() - t0) / interval)
    while (sent < due && inflight < MAX_INFLIGHT) {
      void one(sent, t0 + sent * interval)
      sent++
    }
    setTimeout(tick, 1)
  }

  return {
    /** Starts a phase: requests sent from now on count in it; `forbidden` versions must not answer them. */
    mark (name, { forbidden = [] } = {}) {
      const now = performance.now()
      if (phase) phase.end = now
      phase = newPhase(name, forbidden)
      phases.push(phase)
      if (phases.length === 1) setTimeout(tick, 0)
    },
    /** The requests sent so far in the current phase. */
    get current () { return phase },
    /** Stops sending, waits (up to the request timeout) for every answer, closes the pools. */
    async stop () {
      stopped = true
      if (phase) phase.end = performance.now()
      if (inflight > 0) await Promise.race([new Promise((resolve) => { idle = resolve }), new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS + 2000))])
      await Promise.all(ends.map((e) => e.pool.close().catch(() => {})))
      return { phases, inflightLeft: inflight }
    }
  }
}
