// Propagation bench: how long after a write is acknowledged by instance A do instances B and C
// of a Redis-backed fleet route by it (within 100 ms, goal p99 < 20 ms on loopback),
// and what 10 writes/s cost A's data plane. See bench/README.md "propagation.js".
// Run: npm run bench:propagation   (or: npm run build && node bench/propagation.js)
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import autocannon from 'autocannon'
import { Redis } from 'ioredis'
import { Pool } from 'undici'
import { ROOT, cleanupOnExit, freePort, runBench, sleep, start, stopAll, tempDir, startRedisServer, until } from './lib/children.js'

const OUT = path.join(ROOT, 'bench', '.out')
const env = process.env
const DURATION = Number(env.BENCH_DURATION ?? 5) // s per throughput run
const WRITES = Number(env.BENCH_WRITES ?? 200) // writes per propagation method
const CONNECTIONS = Number(env.BENCH_CONNECTIONS ?? 64) // autocannon connections
const WRITE_RATE = Number(env.BENCH_WRITE_RATE ?? 10) // writes/s during the "with writes" runs
const WARMUP = Number(env.BENCH_WARMUP ?? 2) // s of load on A before the measured runs
const PREFIX = 'bench-propagation'
const ROUTE = 'bench'
const SPLITS = [{ v1: 100, v2: 0 }, { v1: 0, v2: 100 }] // alternated; both upstreams point at the one backend
const STOP_GRACE_MS = 3000 // SIGTERM → SIGKILL grace at the end (a switchyard unregisters from Redis first)

cleanupOnExit()
const tmp = tempDir('switchyard-propagation-')
const clients = [] // undici pools and ioredis clients, closed at the end

// ---------- processes ----------

async function startRedis () {
  const port = await freePort()
  const child = await startRedisServer(port)
  return { port, url: `redis://127.0.0.1:${port}`, child }
}

function switchyardConfig ({ port, adminPort, redisUrl, backend }) {
  return `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
store: { type: redis, url: "${redisUrl}", prefix: ${PREFIX} }
upstreams:
  v1: { targets: [ { url: "${backend}" } ] }
  v2: { targets: [ { url: "${backend}" } ] }
routes:
  - name: ${ROUTE}
    match: { host: "*", pathPrefix: / }
    split: { v1: 100, v2: 0 }
`
}

async function startSwitchyard (name, redisUrl, backend) {
  const port = await freePort()
  const adminPort = await freePort()
  const file = path.join(tmp, `${name}.yaml`)
  fs.writeFileSync(file, switchyardConfig({ port, adminPort, redisUrl, backend }))
  const child = start(`switchyard ${name}`, process.execPath, [path.join(ROOT, 'dist', 'cli.js'), 'start', '--config', file])
  const admin = new Pool(`http://127.0.0.1:${adminPort}`, { connections: 2, pipelining: 1 })
  clients.push(admin)
  await until(`switchyard ${name}`, child, async () => (await get(admin, '/readyz')).ready === true)
  return { name, child, pid: child.pid, port, adminPort, admin, id: null }
}

// ---------- admin calls (undici, keep-alive: a poll costs one request on an open socket) ----------

async function get (pool, p) {
  const res = await pool.request({ method: 'GET', path: p })
  const body = await res.body.json()
  if (res.statusCode !== 200) throw new Error(`GET ${p}: ${res.statusCode} ${JSON.stringify(body)}`)
  return body
}

async function putSplit (pool, split) {
  const res = await pool.request({
    method: 'PUT',
    path: `/api/routes/${ROUTE}/split`,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(split)
  })
  const body = await res.body.json()
  if (res.statusCode !== 200) throw new Error(`PUT split: ${res.statusCode} ${JSON.stringify(body)}`)
  return body.revision
}

/**
 * Wall-clock milliseconds with sub-ms precision, on the same clock as Redis' MONITOR
 * timestamps (gettimeofday). `performance.now()` is monotonic and precise but its origin can
 * drift from the wall clock over a long run, so the offset is re-measured at the start of each
 * phase, at the instant `Date.now()` ticks over (an error well below 0.1 ms).
 */
let clockOffset = 0
function calibrate () {
  const t = Date.now()
  let n
  while ((n = Date.now()) === t) { /* spin (< 1 ms) */ }
  clockOffset = n - performance.now()
}
const wallNow = () => clockOffset + performance.now()

// ---------- propagation ----------

/**
 * Passive: every instance registers itself in Redis the moment it applies a revision (the
 * registry heartbeat that `?waitApplied` reads). MONITOR shows each of those commands with
 * the Redis server's µs timestamp, so the bench learns when B and C applied a revision without
 * sending them a single request. The number includes one loopback hop to Redis (~0.05 ms).
 */
async function measurePassive (redisUrl, writer, followers, writes) {
  const monitorClient = new Redis(redisUrl, { lazyConnect: true })
  clients.push(monitorClient)
  await monitorClient.connect()
  const monitor = await monitorClient.monitor()
  clients.push(monitor)
  const byId = new Map(followers.map((f) => [f.id, f]))
  const applied = new Map(followers.map((f) => [f.name, new Map()])) // name → revision → first ms it was registered
  const waiters = new Set()
  const commits = new Map() // revision → ms of the commit script (for the commit → applied numbers)
  monitor.on('monitor', (time, args) => {
    const ms = Number(time) * 1000
    // REGISTER: evalsha sha 2 {p}:instances {p}:instance:<id> <id> <json> <ttl>
    if ((args[0] === 'evalsha' || args[0] === 'eval') && args[2] === '2' && args[4]?.includes(':instance:')) {
      const f = byId.get(args[5])
      if (!f) return
      let info
      try { info = JSON.parse(args[6]) } catch { return }
      const m = applied.get(f.name)
      if (!m.has(info.appliedRevision)) m.set(info.appliedRevision, ms)
      for (const w of waiters) w()
    }
    // COMMIT: evalsha sha 9 {p}:revision {p}:route-order ... {p}:state {p}:events <expected> <next> ...
    if ((args[0] === 'evalsha' || args[0] === 'eval') && args[2] === '9' && args[3]?.endsWith(':revision') && args[11]?.endsWith(':events')) {
      commits.set(Number(args[13]), ms)
    }
  })
  const appliedAt = (name, revision) => {
    for (const [r, ms] of applied.get(name)) if (r >= revision) return ms
    return undefined
  }
  const waitApplied = (revision, timeoutMs = 5_000) => new Promise((resolve, reject) => {
    const check = () => {
      if (followers.every((f) => appliedAt(f.name, revision) !== undefined)) { done(); resolve() }
    }
    const done = () => { clearTimeout(t); waiters.delete(check) }
    const t = setTimeout(() => { done(); reject(new Error(`revision ${revision} not registered by every follower within ${timeoutMs} ms (is the registry heartbeat sent on apply?)`)) }, timeoutMs)
    waiters.add(check)
    check()
  })

  calibrate()
  const samples = Object.fromEntries(followers.map((f) => [f.name, { ack: [], commit: [] }]))
  for (let i = 0; i < writes; i++) {
    const revision = await putSplit(writer.admin, SPLITS[i % 2])
    const ack = wallNow()
    await waitApplied(revision)
    for (const f of followers) {
      const at = appliedAt(f.name, revision)
      samples[f.name].ack.push(at - ack)
      const committed = commits.get(revision)
      if (committed !== undefined) samples[f.name].commit.push(at - committed)
      applied.get(f.name).clear() // keep the scan short; later registrations of older revisions don't matter
    }
  }
  await monitor.disconnect()
  await monitorClient.quit()
  return samples
}

/**
 * Active: after each acknowledgement, poll B's and C's `GET /readyz` (the cheapest endpoint that
 * shows the applied revision) concurrently, back to back (0 ms between polls), on a kept-alive
 * socket each. The time is when the first answer showing the revision arrived: an upper bound,
 * by at most one poll's round trip. The polling itself takes CPU from the instances it watches.
 */
async function measurePoll (writer, followers, writes) {
  const samples = Object.fromEntries(followers.map((f) => [f.name, { ack: [], polls: 0 }]))
  const pools = followers.map((f) => {
    const pool = new Pool(`http://127.0.0.1:${f.adminPort}`, { connections: 1, pipelining: 1 })
    clients.push(pool)
    return pool
  })
  for (let i = 0; i < writes; i++) {
    const revision = await putSplit(writer.admin, SPLITS[i % 2])
    const ack = performance.now()
    await Promise.all(followers.map(async (f, k) => {
      for (let polls = 1; ; polls++) {
        const { revision: r } = await get(pools[k], '/readyz')
        if (r >= revision) {
          samples[f.name].ack.push(performance.now() - ack)
          samples[f.name].polls += polls
          return
        }
        if (performance.now() - ack > 5_000) throw new Error(`${f.name} did not apply revision ${revision} within 5 s`)
      }
    }))
  }
  return samples
}

// ---------- throughput ----------

async function runAutocannon (url, duration) {
  const r = await autocannon({ url, connections: CONNECTIONS, duration, timeout: 10 })
  return { rps: r.requests.total / r.duration, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors + r.timeouts }
}

/** Writes WRITE_RATE splits per second on `writer` until stopped; returns the count and failures. */
function writeLoop (writer) {
  let stopped = false
  const stats = { writes: 0, failed: 0 }
  const every = 1000 / WRITE_RATE
  const done = (async () => {
    let next = performance.now()
    for (let i = 0; !stopped; i++) {
      try { await putSplit(writer.admin, SPLITS[i % 2]); stats.writes++ } catch { stats.failed++ }
      next += every
      const wait = next - performance.now()
      if (wait > 0) await sleep(wait)
      else next = performance.now() // fell behind: don't burst to catch up
    }
  })()
  return { stats, stop: async () => { stopped = true; await done; return stats } }
}

// ---------- report ----------

const pct = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)] : NaN
const fmt = (x, d = 2) => Number.isFinite(x) ? x.toFixed(d) : '-'
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length

function summary (values) {
  const s = [...values].sort((a, b) => a - b)
  return { n: s.length, p50: pct(s, 50), p99: pct(s, 99), max: s[s.length - 1], beforeAck: s.filter((x) => x <= 0).length }
}

function printTable (title, rows, note) {
  console.log(`\n${title}`)
  console.log(`${'method'.padEnd(34)}${'inst'.padEnd(6)}${'n'.padStart(5)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'max ms'.padStart(9)}  ${note}`)
  for (const r of rows) {
    console.log(`${r.method.padEnd(34)}${r.inst.padEnd(6)}${String(r.n).padStart(5)}${fmt(r.p50, 3).padStart(9)}${fmt(r.p99, 3).padStart(9)}${fmt(r.max, 3).padStart(9)}  ${r.extra}`)
  }
}

// ---------- main ----------

async function main () {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli.js'))) throw new Error('dist/cli.js not found: run `npm run build` first')
  fs.mkdirSync(OUT, { recursive: true })

  const redis = await startRedis()
  const bport = await freePort()
  const backendChild = start('backend', process.execPath, [path.join(ROOT, 'bench', 'peers', 'backend.js'), String(bport)])
  await until('backend', backendChild, async () => (await fetch(`http://127.0.0.1:${bport}/`)).ok)
  const backend = `http://127.0.0.1:${bport}`

  // A first: it seeds the empty Redis from its config; B and C then load that state.
  const a = await startSwitchyard('A', redis.url, backend)
  const b = await startSwitchyard('B', redis.url, backend)
  const c = await startSwitchyard('C', redis.url, backend)
  const fleet = [a, b, c]
  await until('registry (3 instances)', null, async () => {
    const { instances } = await get(a.admin, '/api/instances')
    for (const sy of fleet) sy.id = instances.find((i) => i.pid === sy.pid)?.id ?? null
    return fleet.every((sy) => sy.id !== null)
  })
  const r0 = await fetch(`http://127.0.0.1:${a.port}/`)
  if (r0.status !== 200) throw new Error(`A's proxy answered ${r0.status}: ${await r0.text()}`)
  await r0.arrayBuffer().catch(() => {})

  console.log(`redis-server :${redis.port}, backend :${bport}, switchyard A :${a.port} B :${b.port} C :${c.port} (admin ${a.adminPort}/${b.adminPort}/${c.adminPort})`)
  console.log(`${WRITES} split writes on A per method, then ${DURATION}s throughput runs x4 (+${WARMUP}s warm-up) at ${CONNECTIONS} connections; ` +
    `${os.cpus().length} cpus, node ${process.version}`)
  const load1 = os.loadavg()[0]
  if (load1 > 0.5) console.log(`WARNING: load average ${load1.toFixed(2)} before the bench — other work on this machine will skew the numbers`)

  // Warm-up: JIT, sockets, the scripts cached in Redis.
  for (let i = 0; i < 20; i++) await putSplit(a.admin, SPLITS[i % 2])

  const followers = [b, c]
  const passive = await measurePassive(redis.url, a, followers, WRITES)
  const poll = await measurePoll(a, followers, WRITES)
  for (const sy of fleet) if (sy.child.exited) throw new Error(`${sy.child.label} died ${JSON.stringify(sy.child.exited)}:\n${sy.child.tail}`)

  const rows = []
  const results = { passive: {}, poll: {} }
  for (const f of followers) {
    const s = summary(passive[f.name].ack)
    const sc = summary(passive[f.name].commit)
    results.passive[f.name] = { ackToApplied: s, commitToApplied: sc }
    rows.push({ method: 'registry via MONITOR (passive)', inst: f.name, ...s, extra: `${s.beforeAck} applied before the ack; commit→applied p50 ${fmt(sc.p50, 3)} p99 ${fmt(sc.p99, 3)} max ${fmt(sc.max, 3)}` })
  }
  for (const f of followers) {
    const s = summary(poll[f.name].ack)
    results.poll[f.name] = { ackToApplied: s, pollsPerWrite: poll[f.name].polls / WRITES }
    rows.push({ method: 'poll GET /readyz back to back', inst: f.name, ...s, extra: `${fmt(poll[f.name].polls / WRITES, 1)} polls/write` })
  }
  printTable('=== propagation: ms from A\'s 2xx to the instance having applied that revision ===', rows,
    'passive: negative = applied before the ack reached the client')

  // Throughput of A's data plane, without and with writes, interleaved.
  const url = `http://127.0.0.1:${a.port}/`
  if (WARMUP > 0) await runAutocannon(url, WARMUP) // JIT and connection pools, so the first run is not the slowest
  const runs = []
  for (const withWrites of [false, true, false, true]) {
    const writer = withWrites ? writeLoop(a) : null
    const r = await runAutocannon(url, DURATION)
    const w = writer ? await writer.stop() : null
    for (const sy of fleet) if (sy.child.exited) throw new Error(`${sy.child.label} died ${JSON.stringify(sy.child.exited)}:\n${sy.child.tail}`)
    runs.push({ withWrites, ...r, writes: w?.writes ?? 0, writeFailures: w?.failed ?? 0 })
    console.log(`  ${withWrites ? `with ${WRITE_RATE} writes/s` : 'without writes  '}  ${fmt(r.rps, 0).padStart(7)} rps  p50 ${r.p50} ms  p99 ${r.p99} ms` +
      `${w ? `  (${w.writes} writes${w.failed ? `, ${w.failed} FAILED` : ''})` : ''}${r.non2xx + r.errors ? `  NON-2XX ${r.non2xx} ERRORS ${r.errors}` : ''}`)
  }
  const without = mean(runs.filter((r) => !r.withWrites).map((r) => r.rps))
  const withW = mean(runs.filter((r) => r.withWrites).map((r) => r.rps))
  console.log(`\n=== A's data plane, ${CONNECTIONS} connections, ${DURATION}s runs (mean of 2 each) ===`)
  console.log(`${'without writes'.padEnd(25)}${fmt(without, 0).padStart(7)} rps`)
  console.log(`${`with ${WRITE_RATE} writes/s on A`.padEnd(25)}${fmt(withW, 0).padStart(7)} rps`)
  console.log(`${'ratio with/without'.padEnd(25)}${fmt(withW / without, 3).padStart(7)}`)
  const bad = runs.some((r) => r.non2xx || r.errors || r.writeFailures)
  if (bad) console.log('WARNING: some runs had non-2xx responses, errors or failed writes (see above)')
  console.log(`\nload average (1/5/15 min) at the end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`)

  const file = path.join(OUT, 'propagation.json')
  fs.writeFileSync(file, JSON.stringify({
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, writes: WRITES, durationS: DURATION,
    connections: CONNECTIONS, writeRate: WRITE_RATE, propagation: results, throughput: { runs, without, with: withW, ratio: withW / without },
    hadErrors: bad, loadavgEnd: os.loadavg()
  }, null, 2))
  console.log(`results: ${path.relative(ROOT, file)}`)
}

await runBench(main, async () => {
  await Promise.all(clients.map((c) => (typeof c.quit === 'function' ? c.quit().catch(() => c.disconnect()) : c.close().catch(() => {}))))
  // switchyards first (they unregister from Redis), then the backend and Redis
  await stopAll(STOP_GRACE_MS, (c) => c.label.startsWith('switchyard'))
  await stopAll(STOP_GRACE_MS)
})
