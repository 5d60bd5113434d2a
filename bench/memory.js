// Memory bench: the resident set of switchyard idle and after load, one process and
// `--workers 2`, on this Node (24) with the CLI's own Node settings, with them turned off
// (SWITCHYARD_NODE_TUNING=off), and the build before the runtime port on Node 20.
// Run: npm run bench:memory   (see bench/README.md)
import fs from 'node:fs'
import path from 'node:path'
import autocannon from 'autocannon'
import { findNginx, startBackend, switchyardConfig } from './lib/backend.js'
import { baselineBuild } from './lib/baseline.js'
import { ROOT, cleanupOnExit, freePort, runBench, sleep, start, stop, tempDir, until, waitHttp } from './lib/children.js'
import { childPids, memoryOf } from './lib/proc.js'

const env = process.env
const DURATION = Number(env.BENCH_DURATION ?? 6)
const ROUNDS = Number(env.BENCH_ROUNDS ?? 3)
const CONNECTIONS = Number(env.BENCH_CONNECTIONS ?? 64)
const IDLE_MS = 2_000
const SETTLE_MS = 2_000
const HEADERS = { 'x-user-id': 'bench-user-42' }

cleanupOnExit()
const tmp = tempDir('switchyard-bench-memory-')

/** Memory (MB: RSS, peak, PSS) of `pid` and of each of its children (the workers), and the sums. */
function rssTree (pid) {
  const parts = [{ pid, ...memoryOf(pid) }]
  for (const child of childPids(pid)) {
    try { parts.push({ pid: child, ...memoryOf(child) }) } catch {} // gone since the scan
  }
  return { total: parts.reduce((a, p) => a + p.rssMB, 0), pss: parts.reduce((a, p) => a + p.pssMB, 0), parts }
}

function config (port, admin, backend) {
  const file = path.join(tmp, `switchyard-${port}.yaml`)
  fs.writeFileSync(file, switchyardConfig(port, backend, admin))
  return file
}

/** Starts one variant, waits until every process is up, measures idle, loads it, measures again. */
async function measure (v, backend) {
  const port = await freePort()
  const admin = await freePort()
  const args = [v.cli, 'start', '--config', config(port, admin, backend), ...(v.workers ? ['--workers', String(v.workers)] : [])]
  const child = start(v.name, v.node, args, { env: v.env })
  await waitHttp(child, port, 30_000)
  if (v.workers) {
    // Every worker serves: the admin API lists one instance per worker once it is up.
    const serving = async () => {
      const res = await fetch(`http://127.0.0.1:${admin}/api/instances`, { signal: AbortSignal.timeout(1000) })
      return res.ok && (await res.json()).instances.length === v.workers
    }
    await until(`${v.name}: ${v.workers} workers`, child, serving, 30_000)
  }
  await sleep(IDLE_MS)
  const idle = rssTree(child.pid)
  let requests = 0
  for (let r = 0; r < ROUNDS; r++) {
    const res = await autocannon({ url: `http://127.0.0.1:${port}/`, connections: CONNECTIONS, duration: DURATION, headers: HEADERS })
    if (res.non2xx || res.errors) throw new Error(`${v.name}: ${res.non2xx} non-2xx, ${res.errors} errors under load`)
    requests += res.requests.total
  }
  const loaded = rssTree(child.pid)
  // What it keeps once the load is over: V8 and glibc give memory back when allocation stops.
  await sleep(SETTLE_MS)
  const settled = rssTree(child.pid)
  await stop(child, 5_000)
  return { ...v, idle, loaded, settled, requests }
}

const fmt = (x) => Number.isFinite(x) ? x.toFixed(1) : '-'

async function main () {
  const nginx = findNginx()
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli.js'))) throw new Error('dist/cli.js not found: run `npm run build` first')
  const { url: backend } = await startBackend(nginx, tmp)
  const node = process.execPath
  const cli = path.join(ROOT, 'dist', 'cli.js')
  const variants = [
    { name: 'switchyard', node, cli },
    { name: 'switchyard --workers 2', node, cli, workers: 2 },
    { name: 'tuning off', node, cli, env: { SWITCHYARD_NODE_TUNING: 'off' } },
    { name: 'tuning off --workers 2', node, cli, workers: 2, env: { SWITCHYARD_NODE_TUNING: 'off' } },
  ]
  if (env.BENCH_NODE20 !== '0') {
    const b = baselineBuild()
    variants.push({ name: 'node20 build', node: b.node, cli: b.cli }, { name: 'node20 build --workers 2', node: b.node, cli: b.cli, workers: 2 })
    console.log(`node20 build: ${b.node} ${path.relative(ROOT, b.cli)} (Node ${b.version}, undici ${b.undici}: the build before the runtime port)`)
  }
  console.log(`switchyard on Node ${process.version}; backend ${nginx ? 'nginx' : 'node'}; idle = ${IDLE_MS / 1000} s after start; ` +
    `load = autocannon ${CONNECTIONS} connections, ${ROUNDS} x ${DURATION} s\n`)
  const results = []
  for (const v of variants) {
    results.push(await measure(v, backend))
    const r = results.at(-1)
    console.log(`  ${r.name.padEnd(26)} idle ${fmt(r.idle.total)} MB, end of load (${r.requests} requests) ${fmt(r.loaded.total)} MB, 2 s later ${fmt(r.settled.total)} MB`)
  }
  console.log(`\n${'MB (RSS summed over the processes; PSS in brackets)'.padEnd(52)}${'idle'.padStart(14)}${'end of load'.padStart(16)}${'2 s later'.padStart(16)}${'peak'.padStart(8)}  end of load, per process`)
  for (const r of results) {
    const peak = r.loaded.parts.reduce((a, p) => a + p.peakMB, 0)
    const both = (t) => `${fmt(t.total)} (${fmt(t.pss)})`
    console.log(`${r.name.padEnd(52)}${both(r.idle).padStart(14)}${both(r.loaded).padStart(16)}${both(r.settled).padStart(16)}${fmt(peak).padStart(8)}  ${r.loaded.parts.map((p) => fmt(p.rssMB)).join(' + ')}`)
  }
  const file = path.join(ROOT, 'bench', '.out', 'memory.json')
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), node: process.version, connections: CONNECTIONS, rounds: ROUNDS, durationS: DURATION, results }, null, 2))
  console.log(`results: ${path.relative(ROOT, file)}`)
}

await runBench(main)
