// Small helpers for bench/deploy.js: admin calls, child output, process facts.
import fs from 'node:fs'
import { Agent, request } from 'undici'

// A new connection per admin call: a worker being replaced must not leave the bench holding a
// kept-alive socket to it (undici: pipelining 0 = no keep-alive).
const agent = new Agent({ pipelining: 0 })

/** One admin API call → {status, body} (body parsed as JSON when it is JSON). */
export async function admin (method, base, p, body, headers = {}) {
  const res = await request(base + p, {
    method,
    dispatcher: agent,
    headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    headersTimeout: 65_000,
    bodyTimeout: 65_000
  })
  const text = await res.body.text()
  let parsed = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: res.statusCode, body: parsed }
}

export function closeAdmin () {
  return agent.close().catch(() => {})
}

/** The wall-clock time of day, `HH:MM:SS.mmm` (UTC, as in the proxies' JSON logs). */
export const clock = (ms = Date.now()) => new Date(ms).toISOString().slice(11, 23)

/**
 * Appends everything `child` prints (stdout and stderr) to `file`, each line prefixed with the
 * time it arrived, so the proxies' plain lines can be set beside a failed request's time.
 */
export function logTo (child, file) {
  const out = fs.createWriteStream(file, { flags: 'a' })
  out.write(`${clock()} --- ${child.label} pid ${child.pid} started\n`)
  for (const stream of [child.stdout, child.stderr]) {
    let buf = ''
    stream.on('data', (d) => {
      buf += d
      const lines = buf.split('\n')
      buf = lines.pop()
      for (const l of lines) out.write(`${clock()} ${l}\n`)
    })
  }
  child.on('exit', (code, sig) => out.end(`${clock()} --- ${child.label} pid ${child.pid} exited (${sig ?? code})\n`))
}

/**
 * Resolves with the first stdout line of `child` matching `ok`; rejects on a line matching
 * `bad`, on exit, or after `timeoutMs`.
 */
export function waitLine (child, ok, bad, timeoutMs) {
  return new Promise((resolve, reject) => {
    let buf = ''
    const done = (fn, v) => { clearTimeout(timer); child.stdout.off('data', onData); child.off('exit', onExit); fn(v) }
    const onData = (d) => {
      buf += d
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (ok.test(line)) return done(resolve, line)
        if (bad.test(line)) return done(reject, new Error(`${child.label}: ${line}`))
      }
    }
    const onExit = (code, sig) => done(reject, new Error(`${child.label} exited (${sig ?? code}) before printing ${ok}`))
    const timer = setTimeout(() => done(reject, new Error(`${child.label}: no line matching ${ok} within ${timeoutMs} ms`)), timeoutMs)
    child.stdout.on('data', onData)
    child.once('exit', onExit)
  })
}
