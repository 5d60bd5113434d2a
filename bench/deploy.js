// Deploy bench: a whole v1 → v2 deploy under constant open-loop load, through two switchyard
// instances on one Redis, counting every failed request. See bench/README.md "deploy.js".
// Run: npm run bench:deploy   (or: npm run build && node bench/deploy.js)
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Redis } from 'ioredis'
import { ROOT, cleanupOnExit, freePort, runBench, sleep, start, stopAll, tempDir, startRedisServer, until } from './lib/children.js'
import { startLoad } from './lib/open-loop.js'
import { admin, closeAdmin, logTo, waitLine } from './lib/deploy-helpers.js'
import { ppidOf } from './lib/proc.js'
import { printReport } from './lib/deploy-report.js'

const OUT = path.join(ROOT, 'bench', '.out')
const env = process.env
const RATE = Number(env.BENCH_RATE ?? 1000) // requests per second, all proxies together
const PHASE_MS = Number(env.BENCH_PHASE_S ?? 3) * 1000 // minimum length of each phase
const NO_REDIS = env.BENCH_NO_REDIS === '1' // memory store, no instance B, no Redis phase
const WORKERS = Number(env.BENCH_WORKERS ?? 2) // proxy A's --workers (1 = a single process)
const B_SHARE = NO_REDIS ? 0 : Number(env.BENCH_B_SHARE ?? 0.25) // share of the load sent through B
const POST_SHARE = Number(env.BENCH_POST_SHARE ?? 0.5)
const FRESH_SHARE = Number(env.BENCH_NEW_CONN_SHARE ?? 0.2) // share sent on a new connection each
const CONNECTIONS = Number(env.BENCH_CONNECTIONS ?? 16) // keep-alive connections per proxy
const WARMUP_MS = Number(env.BENCH_WARMUP_S ?? 2) * 1000 // the first phase: cold proxies (JIT, pools)
const REDIS_DOWN_MS = Number(env.BENCH_REDIS_DOWN_MS ?? 1000)
const PREFIX = 'bench-deploy'
const WAIT = 5000 // ms: waitApplied, and how long the fleet may take to show a revision
const MIN_TOTAL = 20_000

cleanupOnExit()
const tmp = tempDir('switchyard-deploy-')
fs.mkdirSync(OUT, { recursive: true })
const notes = [] // [phase, text]: what each phase's action did
const problems = [] // [phase, text]: an action that did not go as a deploy needs (fails the verdict)
let lastRevision = 1 // the revision of the last write the bench made (1 = the seed)

// ---------- processes ----------

function startRedis (port) {
  return startRedisServer(port, (child) => logTo(child, path.join(OUT, 'deploy-redis.log')))
}

async function startBackend (name) {
  const port = await freePort()
  const child = start(`backend ${name}`, process.execPath, [path.join(ROOT, 'bench', 'peers', 'versioned-backend.js'), name, String(port)])
  await until(`backend ${name}`, child, async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok)
  return { name, port, child, url: `http://127.0.0.1:${port}` }
}

function config ({ port, adminPort, redisUrl, backends }) {
  const targets = (v) => backends.filter((b) => b.name.startsWith(v)).map((b) => `{ url: "${b.url}", id: ${b.name} }`).join(', ')
  const hc = '{ path: /healthz, intervalMs: 500, timeoutMs: 400, healthyThreshold: 2, unhealthyThreshold: 2 }'
  return `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
store: ${redisUrl ? `{ type: redis, url: "${redisUrl}", prefix: ${PREFIX} }` : '{ type: memory }'}
upstreams:
  v1: { targets: [ ${targets('v1')} ], healthCheck: ${hc} }
  v2: { targets: [ ${targets('v2')} ], healthCheck: ${hc} }
routes:
  - name: api
    match: { host: "*", pathPrefix: / }
    split: { v1: 100, v2: 0 }
`
}

async function startProxy (name, workers, redisUrl, backends) {
  const port = await freePort()
  const adminPort = await freePort()
  const file = path.join(tmp, `${name}.yaml`)
  fs.writeFileSync(file, config({ port, adminPort, redisUrl, backends }))
  const args = [path.join(ROOT, 'dist', 'cli.js'), 'start', '--config', file, ...(workers > 1 ? ['--workers', String(workers)] : [])]
  const child = start(`switchyard ${name}`, process.execPath, args)
  logTo(child, path.join(OUT, `deploy-${name}.log`))
  const adminUrl = `http://127.0.0.1:${adminPort}`
  await until(`switchyard ${name}`, child, async () => (await admin('GET', adminUrl, '/readyz')).status === 200, 20_000)
  return { name, child, pid: child.pid, url: `http://127.0.0.1:${port}`, adminUrl }
}

// ---------- the fleet as the bench sees it ----------

let A, B, redis

/** Who an instance of the registry is: B, one of A's workers (a child of A's primary), or A itself. */
function label (pid) {
  if (B && pid === B.pid) return 'B'
  if (pid === A.pid) return 'A'
  return ppidOf(pid) === A.pid ? `A worker ${pid}` : `unknown pid ${pid}`
}

/** Every instance's applied revision: A's registry (`GET /api/instances`) and B's own `GET /api/state`. */
async function snapshot () {
  const { body } = await admin('GET', A.adminUrl, '/api/instances')
  const rows = body.instances.map((i) => ({ who: `${label(i.pid)} (registry)`, revision: i.appliedRevision, laggard: i.laggard }))
  if (B) rows.push({ who: 'B (GET /api/state)', revision: (await admin('GET', B.adminUrl, '/api/state')).body.revision })
  return { rows, registered: body.instances.length }
}

const EXPECTED_INSTANCES = () => WORKERS + (B ? 1 : 0)

/** Waits until every expected instance shows `revision` or more; → ms taken, or null with the last snapshot. */
async function fleetAt (revision) {
  const t = performance.now()
  let last = null
  while (performance.now() - t < WAIT) {
    try {
      last = await snapshot()
      if (last.registered === EXPECTED_INSTANCES() && last.rows.every((r) => r.revision >= revision)) return { ms: performance.now() - t }
    } catch (err) { last = { error: err.message } }
    await sleep(20)
  }
  return { ms: null, last }
}

const show = (snap) => snap?.rows ? snap.rows.map((r) => `${r.who} ${r.revision}`).join(', ') : JSON.stringify(snap)

/** A write on A: `?waitApplied` must answer 200, and every instance must then show the revision. */
async function write (phase, method, p, body, reason) {
  const t = performance.now()
  const url = `${p}${p.includes('?') ? '&' : '?'}waitApplied=${WAIT}`
  let res = await admin(method, A.adminUrl, url, body, { 'x-switchyard-reason': reason })
  // 503 STORE_UNAVAILABLE: the instance that took the write has no Redis connection (yet), and
  // nothing was written. A pipeline retries that; so does the bench, for up to 10 s, and says so.
  let unavailable = 0
  while (res.status === 503 && performance.now() - t < 10_000) {
    unavailable++
    await sleep(100)
    res = await admin(method, A.adminUrl, url, body, { 'x-switchyard-reason': reason })
  }
  const ms = performance.now() - t
  if (res.status !== 200) problems.push([phase, `${method} ${p} answered ${res.status}: ${JSON.stringify(res.body).slice(0, 300)}`])
  const revision = res.body?.revision ?? lastRevision
  lastRevision = Math.max(lastRevision, revision)
  const seen = await fleetAt(revision)
  if (seen.ms === null) problems.push([phase, `revision ${revision} not shown by every instance within ${WAIT} ms: ${show(seen.last)}`])
  const retried = unavailable ? ` (after ${unavailable} × 503 STORE_UNAVAILABLE, retried every 100 ms)` : ''
  return { res, revision, ms, note: `revision ${revision}: ${res.status} after ${ms.toFixed(0)} ms${retried} (waitApplied)` }
}

// ---------- phases: each runs its action, then the load goes on until the phase is PHASE_MS long ----------

const setSplit = (split) => async (phase) => (await write(phase, 'PUT', '/api/routes/api/split', split, `bench: split ${JSON.stringify(split)}`)).note

async function redisRestart (phase) {
  const before = lastRevision
  redis.child.kill('SIGKILL')
  await new Promise((resolve) => (redis.child.exited ? resolve() : redis.child.once('exit', resolve)))
  await sleep(REDIS_DOWN_MS)
  redis.child = await startRedis(redis.port)
  const up = performance.now()
  const raw = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  let seeded = null
  let found = null
  try {
    await raw.connect()
    while (performance.now() - up < 10_000) {
      found = await raw.get(`{${PREFIX}}:revision`)
      if (found !== null) { seeded = performance.now() - up; break }
      await sleep(10)
    }
  } finally { raw.disconnect() }
  if (seeded === null) problems.push([phase, 'nobody re-seeded the empty Redis within 10 s'])
  else if (Number(found) !== before) problems.push([phase, `Redis re-seeded with revision ${found}, the fleet's last was ${before}`])
  const w = await write(phase, 'PUT', '/api/routes/api/split', { v1: 50, v2: 50 }, 'bench: a write after the Redis restart')
  const bRev = (await admin('GET', B.adminUrl, '/api/state')).body.revision
  if (bRev < w.revision) problems.push([phase, `B is on revision ${bRev} after the write of revision ${w.revision}`])
  return `Redis SIGKILLed, down ${REDIS_DOWN_MS} ms, restarted empty; re-seeded with revision ${found} ${seeded?.toFixed(0) ?? '-'} ms after it was up; ` +
    `then a write: ${w.note}; B's GET /api/state: revision ${bRev}`
}

async function drainV1 (phase) {
  const one = async (id) => {
    const t = performance.now()
    const res = await admin('POST', A.adminUrl, `/api/upstreams/v1/targets/${id}/drain?waitMs=30000`, undefined, { 'x-switchyard-reason': 'bench: drain v1' })
    if (res.status !== 200 || res.body.drained !== true) problems.push([phase, `drain ${id}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`])
    lastRevision = Math.max(lastRevision, res.body?.revision ?? 0)
    return `${id} ${res.status} drained=${res.body?.drained} after ${(performance.now() - t).toFixed(0)} ms (revision ${res.body?.revision})`
  }
  const out = await Promise.all(backends.filter((b) => b.name.startsWith('v1')).map((b) => one(b.name)))
  const seen = await fleetAt(lastRevision)
  if (seen.ms === null) problems.push([phase, `revision ${lastRevision} not shown by every instance: ${show(seen.last)}`])
  return out.join('; ')
}

async function killV1 () {
  const v1 = backends.filter((b) => b.name.startsWith('v1'))
  for (const b of v1) b.child.kill('SIGKILL')
  await Promise.all(v1.map((b) => new Promise((resolve) => (b.child.exited ? resolve() : b.child.once('exit', resolve)))))
  return `SIGKILL ${v1.map((b) => `${b.name} (pid ${b.child.pid})`).join(', ')}`
}

async function sighupA (phase) {
  const t = performance.now()
  const done = waitLine(A.child, WORKERS > 1 ? /SIGHUP: reload done/ : /SIGHUP: reloaded/, /nothing changed|failed/, 60_000)
  A.child.kill('SIGHUP')
  const line = await done.catch((err) => { problems.push([phase, err.message]); return null })
  return `SIGHUP to A (pid ${A.pid}): ${line ? `"${line.trim()}" after ${(performance.now() - t).toFixed(0)} ms` : 'no reload line'}`
}

let backends = []

async function main () {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli.js'))) throw new Error('dist/cli.js not found: run `npm run build` first')
  for (const f of fs.readdirSync(OUT)) if (/^deploy-.*\.log$/.test(f)) fs.rmSync(path.join(OUT, f)) // this run's logs only
  if (!NO_REDIS) {
    const port = await freePort()
    redis = { port, url: `redis://127.0.0.1:${port}`, child: await startRedis(port) }
  }
  backends = await Promise.all(['v1-a', 'v1-b', 'v2-a', 'v2-b'].map(startBackend))
  A = await startProxy('A', WORKERS, redis?.url, backends) // first: it seeds the empty Redis from its file
  B = NO_REDIS ? null : await startProxy('B', 1, redis.url, backends)
  await until(`registry (${EXPECTED_INSTANCES()} instances)`, null, async () => (await snapshot()).registered === EXPECTED_INSTANCES())

  const load1 = os.loadavg()[0]
  console.log(`switchyard deploy bench: ${RATE} rps open loop (latency from each request's scheduled time), phases of at least ${PHASE_MS / 1000} s`)
  console.log(`  proxy A ${A.url} (${WORKERS > 1 ? `--workers ${WORKERS}` : 'one process'}, ${Math.round((1 - B_SHARE) * 100)} % of the load)` +
    (B ? `, proxy B ${B.url} (one process, ${Math.round(B_SHARE * 100)} %)` : '') + `, store ${NO_REDIS ? 'memory' : `redis :${redis.port} prefix ${PREFIX}`}`)
  console.log(`  backends ${backends.map((b) => `${b.name} :${b.port}`).join(', ')}; ${Math.round(POST_SHARE * 100)} % POST with 1–16 KiB bodies (sha1 checked), ` +
    `${Math.round(FRESH_SHARE * 100)} % on a new connection each (the rest over ${CONNECTIONS} keep-alive connections per proxy); ${os.cpus().length} cpus, node ${process.version}`)
  if (load1 > 0.5) console.log(`  WARNING: load average ${load1.toFixed(2)} before the bench: other work on this machine will show in the latencies`)

  const phases = [
    ...(WARMUP_MS > 0 ? [{ name: 'warm-up 100/0', ms: WARMUP_MS, run: async () => 'load only: the proxies warm up (JIT, connection pools); its requests count like any other' }] : []),
    { name: 'baseline 100/0', run: async () => 'split {v1: 100, v2: 0} from the config file' },
    { name: 'split 90/10', run: setSplit({ v1: 90, v2: 10 }) },
    { name: 'split 50/50', run: setSplit({ v1: 50, v2: 50 }) },
    ...(NO_REDIS ? [] : [{ name: 'Redis kill+restart', run: redisRestart }]),
    { name: 'split 0/100', run: setSplit({ v1: 0, v2: 100 }) },
    // From here on v1 has no share anywhere (the write above was confirmed fleet-wide): a v1 answer is a failure.
    { name: 'drain v1 (2 targets)', forbidden: ['v1'], run: drainV1 },
    { name: 'SIGKILL v1 backends', forbidden: ['v1'], run: killV1 },
    { name: `SIGHUP A${WORKERS > 1 ? ' (workers)' : ''}`, forbidden: ['v1'], run: sighupA },
    { name: 'steady after deploy', forbidden: ['v1'], run: async () => 'load only' }
  ]
  const targets = [{ name: 'A', url: A.url, share: 1 - B_SHARE }, ...(B ? [{ name: 'B', url: B.url, share: B_SHARE }] : [])]
  const load = startLoad({ rate: RATE, targets, postShare: POST_SHARE, freshShare: FRESH_SHARE, connections: CONNECTIONS })
  for (const phase of phases) {
    const t = performance.now()
    load.mark(phase.name, { forbidden: phase.forbidden })
    process.stdout.write(`  ${phase.name} ...`)
    const note = await phase.run(phase.name).catch((err) => { problems.push([phase.name, `action threw: ${err.message}`]); return 'action threw' })
    notes.push([phase.name, note])
    const left = (phase.ms ?? PHASE_MS) - (performance.now() - t)
    if (left > 0) await sleep(left)
    process.stdout.write(` ${load.current.requests} requests, ${load.current.failed} failed\n`)
  }
  const { phases: stats, inflightLeft } = await load.stop()
  if (inflightLeft > 0) problems.push(['end', `${inflightLeft} requests still unanswered after the load stopped`])

  // The revision check: every instance on the same revision, equal to the store's.
  let check = null
  const t = performance.now()
  while (performance.now() - t < WAIT) {
    try {
      const snap = await snapshot()
      const truth = NO_REDIS ? (await admin('GET', A.adminUrl, '/api/state')).body.revision : Number(await rawRevision())
      const ok = snap.registered === EXPECTED_INSTANCES() && snap.rows.every((r) => r.revision === truth)
      check = { truth, ok, rows: snap.rows, registered: snap.registered, expected: EXPECTED_INSTANCES(), lastWrite: lastRevision }
      if (ok) break
    } catch (err) {
      check = { truth: '?', ok: false, rows: [], registered: 0, expected: EXPECTED_INSTANCES(), lastWrite: lastRevision, error: err.message }
    }
    await sleep(50)
  }
  const pass = printReport({ stats, notes, problems, check, store: NO_REDIS ? 'memory' : `Redis {${PREFIX}}:revision`, minTotal: MIN_TOTAL, rate: RATE })
  fs.writeFileSync(path.join(OUT, 'deploy.json'), JSON.stringify({
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, rate: RATE, phaseMs: PHASE_MS, workers: WORKERS, redis: !NO_REDIS,
    phases: stats.map(({ latencies, reasons, ...p }) => ({ ...p, reasons: Object.fromEntries(reasons) })), notes, problems, check, pass, loadavgEnd: os.loadavg()
  }, null, 2))
  console.log(`load average (1/5/15 min) at the end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`)
  console.log(`details: bench/.out/deploy.json; proxy logs: bench/.out/deploy-A.log${B ? ', deploy-B.log' : ''}`)
  if (!pass) process.exitCode = 1
}

async function rawRevision () {
  const raw = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try { await raw.connect(); return await raw.get(`{${PREFIX}}:revision`) } finally { raw.disconnect() }
}

await runBench(main, async () => {
  await closeAdmin()
  await stopAll(3000, (c) => c.label.startsWith('switchyard')) // they unregister from Redis first
  await stopAll(3000)
})
