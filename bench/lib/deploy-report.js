// The report of bench/deploy.js: one line per phase, the total, what each phase did, every
// failure reason with examples, the revision check and the verdict.

const pct = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)] : NaN
const fmt = (x, d = 2) => Number.isFinite(x) ? x.toFixed(d) : '-'
const int = (n) => n.toLocaleString('en-US')

function line (name, requests, failed, lat, seconds, versions) {
  const sorted = Float64Array.from(lat).sort()
  const answered = (versions.v1 ?? 0) + (versions.v2 ?? 0)
  const share = answered ? `${Math.round((versions.v2 ?? 0) / answered * 100)} %` : '-'
  return `${name.padEnd(24)}${int(requests).padStart(9)}${String(failed).padStart(8)}${fmt(pct(sorted, 50)).padStart(9)}${fmt(pct(sorted, 99)).padStart(9)}` +
    `${fmt(requests / seconds, 0).padStart(8)}${share.padStart(9)}`
}

/** Prints the report; → true when the run passed (no failed request, no failed action, one revision everywhere). */
export function printReport ({ stats, notes, problems, check, store, minTotal, rate }) {
  console.log(`\n=== deploy under load: ${rate} rps scheduled; latency from the scheduled send time, failed requests included ===`)
  console.log(`${'phase'.padEnd(24)}${'requests'.padStart(9)}${'failed'.padStart(8)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'rps'.padStart(8)}${'v2 share'.padStart(9)}`)
  const all = { requests: 0, failed: 0, lat: [], versions: {}, seconds: 0 }
  for (const p of stats) {
    const seconds = (p.end - p.start) / 1000
    console.log(line(p.name, p.requests, p.failed, p.latencies, seconds, p.versions))
    all.requests += p.requests
    all.failed += p.failed
    all.seconds += seconds
    for (const x of p.latencies) all.lat.push(x)
    for (const [v, n] of Object.entries(p.versions)) all.versions[v] = (all.versions[v] ?? 0) + n
  }
  console.log(line('total', all.requests, all.failed, all.lat, all.seconds, all.versions))
  // On loopback a proxied request takes a few ms; far more means requests queued because the
  // machine could not keep up (the generator itself late, or answers slower than the rate).
  const slow = stats.filter((p) => p.maxLagMs > 100 || pct(Float64Array.from(p.latencies).sort(), 50) > 50)
  if (slow.length) {
    console.log(`note: requests queued in ${slow.map((p) => `"${p.name}" (up to ${p.peakInflight} in flight, generator up to ${p.maxLagMs.toFixed(0)} ms late)`).join(', ')}: ` +
      'the machine could not keep up with the rate there. Failures still count; those latencies are the machine\'s, not the proxy\'s.')
  }

  console.log('\nwhat each phase did:')
  for (const [name, note] of notes) console.log(`  ${name}: ${note}`)

  if (all.failed > 0) {
    console.log('\nfailed requests, by reason (first examples):')
    for (const p of stats) {
      for (const [key, r] of p.reasons) {
        console.log(`  ${p.name}: ${key}  ×${r.count}`)
        for (const e of r.examples) console.log(`      ${e}`)
      }
    }
  }
  if (problems.length) {
    console.log('\nactions that did not go as a deploy needs:')
    for (const [name, text] of problems) console.log(`  ${name}: ${text}`)
  }

  console.log(`\nrevision check (${store} = ${check.truth}; the bench's last write got revision ${check.lastWrite}):`)
  if (check.error) console.log(`  could not read the fleet: ${check.error}`)
  for (const r of check.rows) console.log(`  ${r.who.padEnd(30)} revision ${r.revision}${r.laggard ? ' (marked laggard)' : ''}`)
  if (check.registered !== check.expected) console.log(`  ${check.registered} instances registered, expected ${check.expected}`)
  console.log(`all instances on revision ${check.truth}: ${check.ok ? 'yes' : 'no'}`)

  const pass = all.failed === 0 && check.ok && problems.length === 0
  const why = []
  if (all.failed) why.push(`${int(all.failed)} failed requests`)
  if (!check.ok) why.push('instances on different revisions')
  if (problems.length) why.push(`${problems.length} failed actions`)
  console.log(`\nVERDICT: ${pass ? 'PASS' : 'FAIL'}: ${int(all.failed)} failed of ${int(all.requests)} requests` +
    `${check.ok ? `, every instance on revision ${check.truth}` : ''}${why.length && !pass ? ` (${why.join(', ')})` : ''}`)
  if (all.requests < minTotal) console.log(`note: ${int(all.requests)} requests is below the ${int(minTotal)} of a full run (raise BENCH_RATE or BENCH_PHASE_S)`)
  return pass
}
