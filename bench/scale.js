// Scale bench: does the cost of a request and of a change stay the same as the state grows?
// States of 1, 1,000 and 10,000 routes (`/svcN/` over 50 upstreams with 1,000 targets in all,
// each route with a header rule, a 90/10 split and sticky hashing). One proxy process with the
// memory store: rps and CPU µs per request to the first and the last route (autocannon, 8
// connections); one split write, quiet and under load: wall time as the admin client sees it,
// and the proxy's event-loop delay (p99, max) around writes under load. Then a fleet of 20
// instances on one Redis (2 full proxies, 18 followers running the real control plane and
// compiler on a data plane that does not listen): propagation of split writes to every
// instance (p50/p99) and Redis output bytes per write. Prints one table.
// Knobs: BENCH_ROUTES=1,1000,10000  BENCH_FLEET_ROUTES=1,10000  BENCH_DURATION=4 (s)
//        BENCH_FLEET=20  BENCH_WRITES=50 (after BENCH_WARMUP_WRITES=5)  BENCH_FLEET_RPS=1000
//        BENCH_WRITE_GAP_MS=200 (pause between fleet writes; 0: back to back)
//        BENCH_DEBUG=1 (each write's propagation per instance)  BENCH_CPU_PROF=dir (profiles of the writes)
import autocannon from 'autocannon'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { cleanupOnExit, freePort, runBench, sleep, start, startRedisServer, tempDir, until, waitHttp } from './lib/children.js'

const list = (v, d) => (v ?? d).split(',').filter((x) => x.trim() !== '').map(Number)
const ROUTES = list(process.env.BENCH_ROUTES, '1,1000,10000')
const FLEET_ROUTES = list(process.env.BENCH_FLEET_ROUTES, '1,10000')
const DURATION = Number(process.env.BENCH_DURATION ?? 4)
const FLEET = Number(process.env.BENCH_FLEET ?? 20)
const WRITES = Number(process.env.BENCH_WRITES ?? 50)
const FLEET_RPS = Number(process.env.BENCH_FLEET_RPS ?? 1000)
const WARMUP_WRITES = Number(process.env.BENCH_WARMUP_WRITES ?? 5)
const WRITE_GAP_MS = Number(process.env.BENCH_WRITE_GAP_MS ?? 200)
const UPSTREAMS = 50
const TARGETS_PER_UPSTREAM = 20

function config (routes, backend, store) {
  const upstreams = {}
  for (let u = 0; u < UPSTREAMS; u++) {
    upstreams[`u${u}`] = { targets: Array.from({ length: TARGETS_PER_UPSTREAM }, (_, i) => ({ url: backend, id: `u${u}-t${i}` })) }
  }
  return {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    store,
    upstreams,
    routes: Array.from({ length: routes }, (_, i) => ({
      name: `svc${i}`,
      match: { pathPrefix: `/svc${i}/` },
      rules: [{ match: { header: { 'x-canary': '1' } }, upstream: `u${(i + 1) % UPSTREAMS}` }],
      split: { [`u${i % UPSTREAMS}`]: 90, [`u${(i + 1) % UPSTREAMS}`]: 10 },
      sticky: { by: 'header', name: 'x-user' },
    })),
  }
}

/** A child instance (bench/lib/scale-instance.js) with a small request/answer channel. */
async function instance (mode, cfg, dir, label) {
  const file = path.join(dir, `${label}.json`)
  fs.writeFileSync(file, JSON.stringify(cfg))
  const child = start(label, process.execPath, ['--max-old-space-size=4096', 'bench/lib/scale-instance.js', mode, file], { ipc: true })
  child.applied = new Map() // revision → at
  child.on('message', (m) => {
    if (m.type === 'applied') child.applied.set(m.revision, m.at)
    else if (m.type === 'ready') child.ready = m
    else child.answer?.(m)
  })
  child.ask = (type, extra = {}) => new Promise((resolve) => { child.answer = (m) => { if (m.type === type) { child.answer = undefined; resolve(m) } }; child.send({ type, ...extra }) })
  await until(label, child, () => child.ready, 120_000)
  return child
}

async function backendServer () {
  const port = await freePort()
  const child = start('backend', process.execPath, ['-e', `
    const body = Buffer.from('{"ok":true}')
    require('node:http').createServer((q, s) => { s.writeHead(200, {'content-type':'application/json','content-length':body.length}); s.end(body) }).listen(${port}, '127.0.0.1')`])
  await waitHttp(child, port)
  return `http://127.0.0.1:${port}`
}

async function load (url, connections = 8, duration = DURATION, rate = undefined) {
  const r = await autocannon({ url, connections, duration, headers: { 'x-user': 'bench-user' }, ...(rate ? { overallRate: rate } : {}) })
  return { requests: r.requests.total, rps: r.requests.total / duration, errors: r.errors + r.non2xx }
}

const agent = new http.Agent({ keepAlive: true })
function putSplit (adminPort, route, split) {
  const body = JSON.stringify(split)
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: adminPort, path: `/api/routes/${route}/split`, method: 'PUT', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let data = ''
      res.on('data', (d) => { data += d })
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(data).revision) : reject(new Error(`split write answered ${res.statusCode}: ${data}`))))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Alternates the split of `route` between 90/10 and 80/20; returns each write's wall time (ms) and revision. */
async function splitWrite (adminPort, n, i) {
  const route = `svc${n - 1}`
  const a = `u${(n - 1) % UPSTREAMS}`
  const b = `u${n % UPSTREAMS}`
  const t0 = performance.now()
  const revision = await putSplit(adminPort, route, i % 2 ? { [a]: 90, [b]: 10 } : { [a]: 80, [b]: 20 })
  return { ms: performance.now() - t0, revision, t0: performance.timeOrigin + t0 }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))] }
const f = (x, d = 1) => (x === undefined ? '-' : x.toFixed(d))

async function single (n, backend, dir) {
  const proxy = await instance('full', config(n, backend, { type: 'memory' }), dir, `proxy-${n}`)
  const base = `http://127.0.0.1:${proxy.ready.proxyPort}`
  const row = { routes: n }
  for (const [key, route] of [['first', 0], ['last', n - 1]]) {
    await load(`${base}/svc${route}/x`, 8, 2) // warm-up: the JIT, the pools
    const c0 = (await proxy.ask('cpu')).us
    const r = await load(`${base}/svc${route}/x`)
    const c1 = (await proxy.ask('cpu')).us
    row[key] = { rps: r.rps, cpuUs: (c1 - c0) / r.requests, errors: r.errors }
  }
  const quiet = []
  for (let i = 0; i < 5; i++) await splitWrite(proxy.ready.adminPort, n, i) // warm-up of the write path
  for (let i = 0; i < 21; i++) quiet.push((await splitWrite(proxy.ready.adminPort, n, i)).ms)
  row.writeQuietMs = median(quiet)
  // Under load: a write every 200 ms while autocannon runs on the last route.
  await proxy.ask('eld-reset')
  const busy = []
  const running = load(`${base}/svc${n - 1}/x`)
  const until = Date.now() + DURATION * 1000 - 300
  for (let i = 0; Date.now() < until; i++) {
    busy.push((await splitWrite(proxy.ready.adminPort, n, i)).ms)
    await sleep(200)
  }
  const loaded = await running
  const eld = await proxy.ask('eld-read')
  row.writeLoadMs = median(busy)
  row.rpsWithWrites = loaded.rps
  row.eldP99 = eld.p99Ms
  row.eldMax = eld.maxMs
  proxy.kill('SIGTERM')
  return row
}

async function redisInfo (port) {
  const { Redis } = await import('ioredis')
  const r = new Redis({ port, host: '127.0.0.1' })
  const text = await r.info('stats')
  await r.quit()
  return Number(/total_net_output_bytes:(\d+)/.exec(text)[1])
}

async function fleet (n, backend, dir) {
  const port = await freePort()
  const redis = await startRedisServer(port)
  const cfg = config(n, backend, { type: 'redis', url: `redis://127.0.0.1:${port}`, prefix: `scale${n}` })
  const full = [await instance('full', cfg, dir, `fleet-${n}-full0`)]
  full.push(await instance('full', cfg, dir, `fleet-${n}-full1`))
  const followers = []
  for (let i = 0; i < FLEET - full.length; i += 6) {
    const batch = Math.min(6, FLEET - full.length - i)
    followers.push(...(await Promise.all(Array.from({ length: batch }, (_, j) => instance('follower', cfg, dir, `fleet-${n}-f${i + j}`)))))
  }
  const all = [...full, ...followers]
  const writer = full[0]
  // Both full proxies serve a steady load (not a saturating one: on 2 cores that would time the
  // scheduler, not the propagation).
  // Long enough to cover every write and its pause, which the check after the writes confirms.
  const loadSeconds = Math.max(DURATION, 8, Math.ceil(4 + ((WARMUP_WRITES + WRITES) * (WRITE_GAP_MS + 250)) / 1000))
  const loadEnds = performance.now() + loadSeconds * 1000
  const servingLoad = FLEET_RPS === 0 ? Promise.resolve([]) : Promise.all(full.map((c) => load(`http://127.0.0.1:${c.ready.proxyPort}/svc${n - 1}/x`, 4, loadSeconds, FLEET_RPS / full.length)))
  await sleep(500)
  // Redis bytes while idle (heartbeats), to subtract from those of the writes.
  const idle0 = await redisInfo(port)
  const idleT0 = performance.now()
  await sleep(1000)
  const idlePerMs = (await redisInfo(port) - idle0) / (performance.now() - idleT0)
  // Likewise the followers' idle CPU (periodic heartbeat and revision check).
  const idleCpu0 = await Promise.all(followers.map((c) => c.ask('cpu')))
  const idleCpuT0 = performance.now()
  await sleep(1000)
  const idleCpu1 = await Promise.all(followers.map((c) => c.ask('cpu')))
  const idleCpuPerMs = idleCpu1.reduce((a, c, i) => a + c.us - idleCpu0[i].us, 0) / followers.length / 1000 / (performance.now() - idleCpuT0)
  // Warm-up writes, not counted (as in the single-process part): the first change a process
  // applies runs code that was never run, in 20 processes at once.
  for (let i = 0; i < WARMUP_WRITES; i++) {
    const w = await splitWrite(writer.ready.adminPort, n, i)
    await until(`revision ${w.revision} on every instance`, null, () => all.every((c) => c.applied.has(w.revision)), 10_000)
    await sleep(WRITE_GAP_MS)
  }
  // BENCH_CPU_PROF=dir: a CPU profile of every instance over the writes alone.
  const profDir = process.env.BENCH_CPU_PROF
  if (profDir) await Promise.all(all.map((c) => c.ask('prof-start')))
  const cpu0 = await Promise.all(followers.map((c) => c.ask('cpu')))
  const out0 = await redisInfo(port)
  const w0 = performance.now()
  const delays = []
  for (let i = 0; i < WRITES; i++) {
    const w = await splitWrite(writer.ready.adminPort, n, i)
    await until(`revision ${w.revision} on every instance`, null, () => all.every((c) => c.applied.has(w.revision)), 10_000)
    for (const c of all) delays.push(c.applied.get(w.revision) - w.t0)
    if (process.env.BENCH_DEBUG) console.error(w.ms.toFixed(1), all.map((c) => (c.applied.get(w.revision) - w.t0).toFixed(1)).join(" "))
    // Each write on its own: the next one starts once this one's after-effects (the deferred
    // registry reports, the instances' reports to this bench) are over.
    await sleep(WRITE_GAP_MS)
  }
  const elapsed = performance.now() - w0
  if (FLEET_RPS > 0 && performance.now() > loadEnds) throw new Error('the serving load ended before the writes did: raise BENCH_DURATION')
  const cpu1 = await Promise.all(followers.map((c) => c.ask('cpu')))
  if (profDir) await Promise.all(all.map((c) => c.ask('prof-stop', { file: path.join(profDir, `${c.label}.cpuprofile`) })))
  // CPU a follower spends per write, less what it spends idle over the same time
  const followerCpuMs = (cpu1.reduce((a, c, i) => a + c.us - cpu0[i].us, 0) / followers.length / 1000 - idleCpuPerMs * elapsed) / WRITES
  const bytes = (await redisInfo(port)) - out0 - idlePerMs * elapsed
  const served = (await servingLoad).reduce((a, r) => ({ errors: a.errors + r.errors, requests: a.requests + r.requests }), { errors: 0, requests: 0 })
  for (const c of all) c.kill('SIGTERM')
  redis.kill('SIGTERM')
  return { routes: n, instances: all.length, p50: pct(delays, 0.5), p99: pct(delays, 0.99), bytesPerWrite: bytes / WRITES, followerCpuMs, perInstance: bytes / WRITES / all.length, servedErrors: served.errors }
}

async function main () {
  const dir = tempDir('switchyard-scale-')
  const backend = await backendServer()
  const rows = []
  for (const n of ROUTES) {
    rows.push(await single(n, backend, dir))
    console.error(`single process, ${n} routes: done`)
  }
  const fleets = []
  for (const n of FLEET_ROUTES) {
    fleets.push(await fleet(n, backend, dir))
    console.error(`fleet, ${n} routes: done`)
  }
  const ref = rows[0]
  console.log('\nOne proxy, memory store (autocannon 8 connections, %d s each)', DURATION)
  console.log('| routes | rps first | rps last (× of 1 route) | CPU µs/req first / last | split write quiet ms | under load ms | rps with 5 writes/s | event-loop delay p99 / max ms |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const r of rows) {
    console.log(`| ${r.routes} | ${f(r.first.rps, 0)} | ${f(r.last.rps, 0)} (${f(r.last.rps / ref.last.rps, 2)}×) | ${f(r.first.cpuUs)} / ${f(r.last.cpuUs)} | ${f(r.writeQuietMs, 2)} | ${f(r.writeLoadMs, 2)} | ${f(r.rpsWithWrites, 0)} | ${f(r.eldP99, 1)} / ${f(r.eldMax, 1)} |`)
  }
  console.log(`\nFleet on one Redis (${FLEET} instances: 2 full proxies serving ${FLEET_RPS} rps in all; ${WRITES} split writes, ${WRITE_GAP_MS} ms apart, after ${WARMUP_WRITES} not counted)`)
  console.log('| routes | propagation p50 ms | p99 ms | Redis output bytes per write | per instance | follower CPU ms per write | errors under load |')
  console.log('|---|---|---|---|---|---|---|')
  for (const r of fleets) console.log(`| ${r.routes} | ${f(r.p50, 2)} | ${f(r.p99, 2)} | ${f(r.bytesPerWrite, 0)} | ${f(r.perInstance, 0)} | ${f(r.followerCpuMs, 2)} | ${r.servedErrors} |`)
  const errors = rows.reduce((a, r) => a + r.first.errors + r.last.errors, 0)
  if (errors > 0) console.log(`\n${errors} requests failed in the single-process runs`)
}

cleanupOnExit()
await runBench(main)
