// Throughput/latency bench: switchyard vs. the backend directly, a bare @fastify/http-proxy,
// a bare node:http+undici proxy (the Node limit) and nginx. See bench/README.md.
// Run: npm run bench   (or: npm run build && node bench/throughput.js)
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import autocannon from 'autocannon'
import { baselineBuild } from './lib/baseline.js'
import { BODY, findNginx, startBackend, startNginx, switchyardConfig, which } from './lib/backend.js'
import { ROOT, cleanupOnExit, freePort, runBench, start, stop, tempDir, waitHttp } from './lib/children.js'
import { childPids, cpuUsOf, memoryOf } from './lib/proc.js'

const OUT = path.join(ROOT, 'bench', '.out')
const PEERS = path.join(ROOT, 'bench', 'peers')
const env = process.env
const DURATION = Number(env.BENCH_DURATION ?? 5)
const WARMUP = Number(env.BENCH_WARMUP ?? 1)
const ROUNDS = Number(env.BENCH_ROUNDS ?? 3)
const CONNECTIONS = (env.BENCH_CONNECTIONS ?? '1,64').split(',').map(Number)
const TOOL = env.BENCH_TOOL ?? 'autocannon'
const CPU_PROF = env.BENCH_CPU_PROF === '1'
const HEADERS = { 'x-user-id': 'bench-user-42' } // sticky key: makes switchyard hash it
/** measured one right after the other in every round: see main() */
const PAIRED = ['switchyard', 'switchyard-node20', 'bare-undici']

cleanupOnExit()
const tmp = tempDir('switchyard-bench-')

function switchyardArgv (port, backend, adminPort = 0, name = 'switchyard', extra = '', shadow = null) {
  const config = path.join(tmp, `${name}.yaml`)
  fs.writeFileSync(config, switchyardConfig(port, backend, adminPort, extra, shadow))
  const template = env.BENCH_SWITCHYARD_CMD ?? 'node dist/cli.js start --config {config}'
  const argv = template.trim().split(/\s+/).map((a) =>
    a.replaceAll('{config}', config).replaceAll('{port}', String(port)).replaceAll('{backend}', backend))
  if (argv[0] === 'node') argv[0] = process.execPath
  if (CPU_PROF && argv[0] === process.execPath) argv.splice(1, 0, '--cpu-prof', '--cpu-prof-dir', OUT)
  return argv
}

// ---------- load generators ----------

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 }
const pct = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))] : NaN

async function runAutocannon (url, connections, duration) {
  const lat = [] // exact per-request ms (autocannon's own histogram is integer ms)
  const inst = autocannon({ url, connections, duration, headers: HEADERS, timeout: 10 })
  inst.on('response', (_client, status, _bytes, ms) => { if (status < 300) lat.push(ms) })
  const r = await inst
  lat.sort((a, b) => a - b)
  return { rps: r.requests.total / r.duration, requests: r.requests.total, p50: pct(lat, 50), p99: pct(lat, 99), non2xx: r.non2xx, errors: r.errors }
}

const WRK_UNIT = { us: 1e-3, ms: 1, s: 1e3, m: 60e3 }
function runWrk (url, connections, duration) {
  const args = ['-t', String(Math.min(connections, Number(env.BENCH_WRK_THREADS ?? 1))), '-c', String(connections),
    '-d', `${duration}s`, '--latency', '--timeout', '10s', ...Object.entries(HEADERS).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url]
  return new Promise((resolve, reject) => {
    const p = spawn(WRK, args)
    let out = ''
    p.stdout.on('data', (d) => { out += d })
    p.stderr.on('data', (d) => { out += d })
    p.on('error', reject)
    p.on('exit', (code) => {
      const lat = (q) => { const m = out.match(new RegExp(`^\\s*${q}%\\s+([\\d.]+)(us|ms|s|m)\\b`, 'm')); return m ? m[1] * WRK_UNIT[m[2]] : NaN }
      const rps = out.match(/Requests\/sec:\s+([\d.]+)/)
      if (code !== 0 || !rps) return reject(new Error(`wrk failed (${code}):\n${out}`))
      const sock = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/)
      resolve({
        rps: Number(rps[1]), requests: Number(out.match(/(\d+) requests in/)?.[1] ?? NaN), p50: lat(50), p99: lat(99),
        non2xx: Number(out.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0),
        errors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0
      })
    })
  })
}

/**
 * CPU time (user + system, µs) of a process and its direct children (nginx's workers), from
 * /proc: the cost per request it gives is far steadier than rps on a machine whose other work
 * comes and goes. NaN where /proc is missing.
 */
function cpuUs (pid) {
  try {
    let total = cpuUsOf(pid)
    for (const child of childPids(pid)) {
      try { total += cpuUsOf(child) } catch {} // gone since the scan
    }
    return total
  } catch { return NaN }
}

const WRK = TOOL === 'wrk' ? which('wrk') : null
if (TOOL === 'wrk' && !WRK) throw new Error('BENCH_TOOL=wrk but wrk is not on PATH')
const load = TOOL === 'wrk' ? runWrk : runAutocannon

/** GETs `url` every `ms` until stopped; resolves with how many scrapes answered 200. */
function scrapeEvery (url, ms) {
  let ok = 0
  let running = true
  const loop = (async () => {
    while (running) {
      try { const r = await fetch(url); await r.text(); if (r.status === 200) ok++ } catch {}
      await new Promise((resolve) => setTimeout(resolve, ms))
    }
  })()
  return { stop: async () => { running = false; await loop; return ok } }
}

// ---------- main ----------

async function main () {
  fs.mkdirSync(OUT, { recursive: true })
  const nginx = findNginx()
  const targets = [] // { name, port, child }

  // backend
  if (!nginx) console.log('note: nginx not found — backend is bench/peers/backend.js (node:http) and the nginx proxy is skipped')
  const { child: backendChild, port: bport, url: backend } = await startBackend(nginx, tmp)
  targets.push({ name: 'direct', port: bport, child: backendChild })

  // switchyard
  const sport = await freePort()
  const sadmin = await freePort()
  const argv = switchyardArgv(sport, backend, sadmin)
  if (!env.BENCH_SWITCHYARD_CMD && !fs.existsSync(path.join(ROOT, 'dist', 'cli.js'))) {
    throw new Error('dist/cli.js not found: run `npm run build` first (or set BENCH_SWITCHYARD_CMD)')
  }
  const sy = start('switchyard', argv[0], argv.slice(1))
  await waitHttp(sy, sport)
  // switchyard at default settings is scraped like Prometheus would (here every second, 15x the
  // usual rate) while it is measured; `switchyard-quiet` has logs off and is never scraped: the
  // difference is what observability costs the proxy
  targets.push({ name: 'switchyard', port: sport, child: sy, scrape: env.BENCH_SCRAPE === '0' ? null : `http://127.0.0.1:${sadmin}/metrics` })
  // The same config on the build before the runtime port (undici 7) and on Node 20, scraped
  // the same way: what the port to Node 24 and undici 8 changed.
  let baseline = null
  if (env.BENCH_NODE20 !== '0' && !env.BENCH_SWITCHYARD_CMD) {
    baseline = baselineBuild()
    const bport20 = await freePort()
    const badmin20 = await freePort()
    const bargv = switchyardArgv(bport20, backend, badmin20, 'switchyard-node20')
    const child = start('switchyard-node20', baseline.node, [baseline.cli, ...bargv.slice(bargv.indexOf('dist/cli.js') + 1)])
    await waitHttp(child, bport20)
    targets.push({ name: 'switchyard-node20', port: bport20, child, scrape: env.BENCH_SCRAPE === '0' ? null : `http://127.0.0.1:${badmin20}/metrics` })
  }
  if (env.BENCH_QUIET !== '0' && !env.BENCH_SWITCHYARD_CMD) {
    const qport = await freePort()
    const qargv = switchyardArgv(qport, backend, 0, 'switchyard-quiet')
    qargv.push('--log-level', 'silent')
    const child = start('switchyard-quiet', qargv[0], qargv.slice(1))
    await waitHttp(child, qport)
    targets.push({ name: 'switchyard-quiet', port: qport, child })
  }
  // the access log on, one request in a hundred (JSON lines on stdout, a pipe the bench reads)
  if (env.BENCH_ACCESS !== '0' && !env.BENCH_SWITCHYARD_CMD) {
    const aport = await freePort()
    const aargv = switchyardArgv(aport, backend, 0, 'switchyard-access', 'accessLog: { sample: 0.01 }')
    const child = start('switchyard-access', aargv[0], aargv.slice(1))
    await waitHttp(child, aport)
    targets.push({ name: 'switchyard-access', port: aport, child })
  }

  // the same switchyard with a canary rollout in progress on the bench route (50 %, analysed
  // every second from the fleet's figures): the hot path must pay nothing for it
  if (env.BENCH_ROLLOUT !== '0' && !env.BENCH_SWITCHYARD_CMD) {
    const rport = await freePort()
    const radmin = await freePort()
    const rargv = switchyardArgv(rport, backend, radmin, 'switchyard-rollout')
    const child = start('switchyard-rollout', rargv[0], rargv.slice(1))
    await waitHttp(child, rport)
    const res = await fetch(`http://127.0.0.1:${radmin}/api/rollouts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'bench', route: 'bench', from: 'v1', to: 'v2', steps: [{ weight: 50, pauseMs: 86_400_000 }], analysis: { intervalMs: 1000, minRequests: 1 } })
    })
    if (res.status !== 201) throw new Error(`starting the bench rollout answered ${res.status}: ${await res.text()}`)
    targets.push({ name: 'switchyard-rollout', port: rport, child, adminPort: radmin })
  }

  // the same switchyard mirroring 10 % of the bench route's requests to a second backend, whose
  // answers are compared with the first's (same body: no mismatch): the copies cost what they cost
  if (env.BENCH_MIRROR !== '0' && !env.BENCH_SWITCHYARD_CMD) {
    const { child: shadowChild, url: shadowUrl } = await startBackend(nginx, tmp, 'shadow')
    const mport = await freePort()
    const madmin = await freePort()
    const margv = switchyardArgv(mport, backend, madmin, 'switchyard-mirror', '', shadowUrl)
    const child = start('switchyard-mirror', margv[0], margv.slice(1))
    await waitHttp(child, mport)
    targets.push({ name: 'switchyard-mirror', port: mport, child, adminPort: madmin, helper: shadowChild })
  }

  // peers
  for (const [name, file] of [['fastify-http-proxy', 'fastify-proxy.js'], ['bare-undici', 'bare-undici.js']]) {
    const port = await freePort()
    const child = start(name, process.execPath, [path.join(PEERS, file), String(port), backend])
    await waitHttp(child, port)
    targets.push({ name, port, child })
  }
  if (nginx) {
    const port = await freePort()
    const child = await startNginx(nginx, tmp, 'proxy-nginx', port, `
  upstream backend { server 127.0.0.1:${bport}; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:PORT; location / {
    proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } }`)
    targets.push({ name: 'nginx', port, child })
  }

  for (const t of targets) { // sanity: every target answers 200 with the backend's body
    const r = await fetch(`http://127.0.0.1:${t.port}/`, { headers: HEADERS })
    const body = await r.text()
    if (r.status !== 200 || body !== BODY) throw new Error(`${t.name} answered ${r.status} ${body.slice(0, 200)}`)
  }
  console.log(`switchyard: ${argv.join(' ')} (Node ${process.version}; every line but switchyard-node20 and nginx runs on this Node)`)
  if (baseline) console.log(`switchyard-node20: ${baseline.node} ${path.relative(ROOT, baseline.cli)} (Node ${baseline.version}, undici ${baseline.undici}: the build before the runtime port)`)
  console.log(`tool ${TOOL}, ${DURATION}s x ${ROUNDS} rounds (+${WARMUP}s warm-up each), connections ${CONNECTIONS.join(',')}, ` +
    `backend ${nginx ? 'nginx' : 'node'}, ${os.cpus().length} cpus, node ${process.version}`)
  const load1 = os.loadavg()[0]
  if (load1 > 0.5) console.log(`WARNING: load average ${load1.toFixed(2)} before the bench — other work on this machine will skew the numbers`)
  const est = CONNECTIONS.length * ROUNDS * targets.length * (DURATION + WARMUP)
  console.log(`about ${Math.ceil(est / 60)} min\n`)

  // measure: round-robin over targets, several rounds, median per target. switchyard, the
  // build before the runtime port and the bare undici proxy run one right after the other in
  // every round, so that the per-round ratios between them compare runs made seconds apart on
  // a machine whose speed drifts.
  const paired = targets.filter((t) => PAIRED.includes(t.name))
  const units = [paired, ...targets.filter((t) => !PAIRED.includes(t.name)).map((t) => [t])]
  const rotate = (xs, n) => xs.map((_, i) => xs[(i + n) % xs.length])
  const results = {}
  for (const c of CONNECTIONS) {
    results[c] = Object.fromEntries(targets.map((t) => [t.name, { rounds: [] }]))
    for (let round = 0; round < ROUNDS; round++) {
      // each round starts one target further on, so no target always follows the same one;
      // the paired ones stay together and take turns at going first
      const order = rotate(units, round).flatMap((u) => u === paired ? rotate(paired, round) : u)
      for (const t of order) {
        const url = `http://127.0.0.1:${t.port}/`
        if (WARMUP > 0) await load(url, c, WARMUP)
        const scraper = t.scrape ? scrapeEvery(t.scrape, 1000) : null
        const cpu0 = t.child.pid ? cpuUs(t.child.pid) : NaN
        const r = await load(url, c, DURATION)
        r.cpuUsPerReq = ((t.child.pid ? cpuUs(t.child.pid) : NaN) - cpu0) / r.requests
        if (scraper) r.scrapes = await scraper.stop()
        if (t.child.exited) throw new Error(`${t.name} died during the bench ${JSON.stringify(t.child.exited)}:\n${t.child.tail}`)
        results[c][t.name].rounds.push(r)
        process.stdout.write(`  c=${c} round ${round + 1} ${t.name.padEnd(18)} ${fmt(r.rps, 0).padStart(8)} rps  ` +
          `p50 ${fmt(r.p50, 3)} ms  p99 ${fmt(r.p99, 3)} ms  cpu ${fmt(r.cpuUsPerReq, 1)} µs/req${r.non2xx + r.errors ? `  NON-2XX ${r.non2xx} ERRORS ${r.errors}` : ''}\n`)
      }
    }
    for (const t of targets) {
      const s = results[c][t.name]
      for (const k of ['rps', 'p50', 'p99', 'cpuUsPerReq']) s[k] = median(s.rounds.map((r) => r[k]))
      s.non2xx = s.rounds.reduce((a, r) => a + r.non2xx, 0)
      s.errors = s.rounds.reduce((a, r) => a + r.errors, 0)
    }
  }

  const ro = targets.find((t) => t.name === 'switchyard-rollout')
  if (ro) {
    // the rollout must still be in progress, analysed, not failed: else the row measured something else
    const r = await (await fetch(`http://127.0.0.1:${ro.adminPort}/api/rollouts/bench`)).json()
    console.log(`\nrollout during the bench: phase ${r.phase}, weight ${r.weight}, last analysis ${r.analysis?.verdict ?? 'none'} (${r.analysis?.requests ?? 0} requests in ${r.analysis?.windowMs ?? 0} ms)`)
    if (r.phase !== 'progressing') console.log('WARNING: the rollout was not in progress at the end: the switchyard-rollout row does not show a rollout in progress')
  }
  const mi = targets.find((t) => t.name === 'switchyard-mirror')
  if (mi) {
    // the copies must have been sent and compared, not skipped: else the row measured something else
    const m = (await (await fetch(`http://127.0.0.1:${mi.adminPort}/api/routes/bench/mirror?window=5m`)).json()).figures
    console.log(`\nmirror during the bench (last 5 min): ${m.requests} copies answered, ${m.errors} errors, ${m.skipped.busy} skipped (busy), ${m.compared} compared, ${m.mismatches.status + m.mismatches.body} mismatches`)
    if (m.requests === 0 || m.skipped.busy > m.requests) console.log('WARNING: few copies were sent: the switchyard-mirror row does not show mirroring at 10 %')
  }
  // After the load, before anything stops: what each process kept.
  const rss = Object.fromEntries(targets.map((t) => [t.name, t.child.pid ? readRss(t.child.pid) : null]))
  await stop(sy, CPU_PROF ? 30_000 : 5_000)
  if (CPU_PROF) console.log(`\ncpu profile: ${fs.readdirSync(OUT).filter((f) => f.endsWith('.cpuprofile')).sort().pop() ?? 'NOT WRITTEN'} in bench/.out`)
  report(targets.map((t) => t.name), results, rss)
}

function readRss (pid) {
  try { return memoryOf(pid) } catch { return null }
}

const fmt = (x, d) => Number.isFinite(x) ? x.toFixed(d) : '-'

function report (names, results, rss) {
  const ratios = {}
  let bad = false
  for (const [c, byName] of Object.entries(results)) {
    console.log(`\n=== ${c} connection${c === '1' ? '' : 's'} (median of ${ROUNDS} rounds; non-2xx/errors summed) ===`)
    console.log(`${'target'.padEnd(20)}${'rps'.padStart(10)}${'rps min-max'.padStart(18)}${'p50 ms'.padStart(10)}${'p99 ms'.padStart(10)}${'non2xx'.padStart(8)}${'errors'.padStart(8)}${'cpu µs/req'.padStart(12)}${'RSS MB'.padStart(9)}`)
    for (const n of names) {
      const s = byName[n]
      const rr = s.rounds.map((r) => r.rps)
      if (s.non2xx || s.errors) bad = true
      console.log(`${n.padEnd(20)}${fmt(s.rps, 0).padStart(10)}${`${fmt(Math.min(...rr), 0)}-${fmt(Math.max(...rr), 0)}`.padStart(18)}` +
        `${fmt(s.p50, 3).padStart(10)}${fmt(s.p99, 3).padStart(10)}${String(s.non2xx).padStart(8)}${String(s.errors).padStart(8)}${fmt(s.cpuUsPerReq, 1).padStart(12)}` +
        `${fmt(rss[n]?.rssMB, 1).padStart(9)}`)
    }
    const sy = byName.switchyard
    ratios[c] = { p50DeltaVsDirectMs: sy.p50 - byName.direct.p50, p99DeltaVsDirectMs: sy.p99 - byName.direct.p99 }
    const parts = []
    for (const n of names.filter((n) => n !== 'switchyard')) {
      ratios[c][`rps_vs_${n}`] = sy.rps / byName[n].rps
      parts.push(`/${n} ${fmt(sy.rps / byName[n].rps, 2)}`)
    }
    console.log(`switchyard rps ratio: ${parts.join('  ')}`)
    // Each variant against its reference: the median rps ratio, and the CPU cost per request,
    // which a noisy machine disturbs far less (rps at saturation goes as 1 / CPU per request).
    const versus = (what, a, b, than) => {
      if (!a || !b) return
      console.log(`${what}: ${fmt(a.rps / b.rps, 2)}× the rps of ${than}; CPU per request ${fmt(a.cpuUsPerReq, 1)} vs ${fmt(b.cpuUsPerReq, 1)} µs (${fmt(b.cpuUsPerReq / a.cpuUsPerReq, 2)}× the requests per CPU second)`)
    }
    versus(env.BENCH_SCRAPE === '0' ? 'logs at info (not scraped: BENCH_SCRAPE=0)' : 'metrics scraped every second and logs at info', sy, byName['switchyard-quiet'], 'switchyard with logs off and no scrape')
    versus('access log at 1 %', byName['switchyard-access'], sy, 'switchyard without')
    versus('with a rollout in progress', byName['switchyard-rollout'], sy, 'switchyard without')
    versus('with 10 % mirrored and compared', byName['switchyard-mirror'], sy, 'switchyard without')
    console.log(`switchyard latency vs direct: p50 +${fmt(ratios[c].p50DeltaVsDirectMs, 3)} ms, p99 +${fmt(ratios[c].p99DeltaVsDirectMs, 3)} ms`)
    const old = byName['switchyard-node20']
    if (old) {
      ratios[c].p50DeltaVsDirectMsNode20 = old.p50 - byName.direct.p50
      console.log(`runtime port: switchyard (Node ${process.versions.node.split('.')[0]}) ${fmt(sy.rps / old.rps, 2)}× the rps of switchyard-node20, ` +
        `CPU per request ${fmt(sy.cpuUsPerReq, 1)} vs ${fmt(old.cpuUsPerReq, 1)} µs, p50 over direct +${fmt(ratios[c].p50DeltaVsDirectMs, 3)} vs +${fmt(ratios[c].p50DeltaVsDirectMsNode20, 3)} ms`)
    }
    for (const n of PAIRED.slice(1).filter((n) => byName[n])) {
      const perRound = sy.rounds.map((r, i) => r.rps / byName[n].rounds[i].rps)
      ratios[c][`rps_vs_${n}_paired`] = median(perRound)
      console.log(`switchyard / ${n}, round by round: ${perRound.map((x) => fmt(x, 2)).join(' ')} (median ${fmt(median(perRound), 2)})`)
    }
  }
  console.log(`\nload average (1/5/15 min) at the end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`)
  // VmRSS after the last run (the RSS MB column) and the peak (VmHWM) over the whole bench.
  for (const n of names.filter((n) => n.startsWith('switchyard') || n === 'bare-undici' || n === 'fastify-http-proxy')) {
    const r = rss[n]
    console.log(`RSS after load ${n.padEnd(20)} ${r ? `${fmt(r.rssMB, 1)} MB (peak ${fmt(r.peakMB, 1)} MB)` : 'unavailable (no /proc)'}`)
  }
  if (bad) console.log('WARNING: some runs had non-2xx responses or errors (see tables)')
  const file = path.join(OUT, 'throughput.json')
  fs.writeFileSync(file, JSON.stringify({
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, tool: TOOL,
    durationS: DURATION, warmupS: WARMUP, rounds: ROUNDS, cpuProf: CPU_PROF, loadavgEnd: os.loadavg(),
    switchyardCmd: env.BENCH_SWITCHYARD_CMD ?? null, targets: names, results, ratios, rss, hadErrors: bad
  }, null, 2))
  console.log(`results: ${path.relative(ROOT, file)}`)
}

await runBench(main)
