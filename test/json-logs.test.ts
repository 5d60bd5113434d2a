/**
 * With the JSON log format (the default) every line a started proxy writes to stdout is a JSON
 * record, the ready line included, so a log shipper never meets a line it cannot parse; the
 * plain ready line only with --log-format pretty. The real CLI (dist/cli.js start), one process
 * and --workers 2.
 */
import { describe, expect, it, onTestFinished } from 'vitest'
import { eventually } from './helpers/eventually.js'
import { parseReadyLine, spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'
import { statusBackend } from './helpers/status-backend.js'

/** Every stdout line, parsed; fails the test on any line that is not a JSON object. */
function jsonLines(p: ProxyProcess): Record<string, unknown>[] {
  const out = p.stdout()
  expect(out.endsWith('\n'), 'the last line is complete').toBe(true)
  return out
    .slice(0, -1)
    .split('\n')
    .map((line) => {
      let parsed: unknown
      expect(() => (parsed = JSON.parse(line)), line).not.toThrow()
      expect(parsed, line).toBeTypeOf('object')
      return parsed as Record<string, unknown>
    })
}

async function started(extra: string[], config: Record<string, unknown> = {}): Promise<ProxyProcess> {
  const v1 = await statusBackend('v1')
  // the access log on for every request: per-request lines are stdout lines too
  const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }], accessLog: { sample: 1 }, ...config }, extra)
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  return p
}

async function traffic(p: ProxyProcess): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${p.url}/x/${i}?q=${i}`)
    expect(res.status).toBe(200)
    await res.arrayBuffer()
  }
  // a request the proxy answers itself, and an admin call
  await (await fetch(`${p.url}/a/..%2f..%5cb`)).arrayBuffer()
  await (await fetch(`${p.adminUrl}/api/state`)).arrayBuffer()
}

describe('stdout with the JSON format', () => {
  it('one process: every line is JSON, from the ready record to the last line after SIGTERM', { timeout: 30_000 }, async () => {
    const p = await started([])
    await traffic(p)
    await eventually(() => expect(jsonLines(p).filter((l) => l['type'] === 'access')).toHaveLength(5))
    expect(await p.stop('SIGTERM')).toBe(0)
    const lines = jsonLines(p)
    const ready = lines.filter((l) => l['msg'] === 'ready')
    expect(ready).toHaveLength(1)
    expect(ready[0]).toMatchObject({ level: 'info', msg: 'ready', proxy: p.url, admin: p.adminUrl, store: 'memory', pid: p.pid })
    expect(ready[0]!['workers']).toBeUndefined()
    expect(typeof ready[0]!['time']).toBe('string')
    expect(lines.map((l) => l['msg'])).toContain('stopped')
  })

  it('--workers 2: the primary prints the ready record once, naming the workers; every line of every process is JSON', { timeout: 40_000 }, async () => {
    const p = await started(['--workers', '2'])
    expect(p.ready).toEqual({ proxy: p.url, admin: p.adminUrl, store: 'memory', workers: 2 })
    await traffic(p)
    await eventually(() => expect(jsonLines(p).filter((l) => l['type'] === 'access')).toHaveLength(5))
    expect(await p.stop('SIGTERM')).toBe(0)
    const lines = jsonLines(p)
    const ready = lines.filter((l) => l['msg'] === 'ready')
    expect(ready).toHaveLength(1)
    expect(ready[0]).toMatchObject({ proxy: p.url, admin: p.adminUrl, store: 'memory', workers: 2, pid: p.pid })
    // the workers' own lines (two pids besides the primary's)
    expect(new Set(lines.map((l) => l['pid'])).size).toBe(3)
  })

  it('--log-level warn: info lines are off, the ready record is still written', { timeout: 30_000 }, async () => {
    const p = await started(['--log-level', 'warn'], { accessLog: undefined })
    expect(await p.stop('SIGTERM')).toBe(0)
    expect(jsonLines(p).map((l) => l['msg'])).toEqual(['ready'])
  })

  it('--log-format pretty: the plain ready line, and no JSON', { timeout: 30_000 }, async () => {
    const p = await started(['--log-format', 'pretty'])
    expect(await p.stop('SIGTERM')).toBe(0)
    const lines = p.stdout().split('\n')
    expect(lines).toContain(`switchyard proxy ${p.url} admin ${p.adminUrl} store memory`)
    expect(p.ready).toEqual({ proxy: p.url, admin: p.adminUrl, store: 'memory' })
    expect(lines.filter((l) => l.startsWith('{'))).toEqual([])
  })
})

describe('parseReadyLine', () => {
  it('reads either form; nothing else is a ready line', () => {
    const json = '{"level":"info","time":"2024-01-01T00:00:00.000Z","pid":1,"proxy":"http://127.0.0.1:8080","admin":"http://127.0.0.1:9901","store":"redis","workers":2,"msg":"ready"}'
    const want = { proxy: 'http://127.0.0.1:8080', admin: 'http://127.0.0.1:9901', store: 'redis', workers: 2 }
    expect(parseReadyLine(json)).toEqual(want)
    expect(parseReadyLine('switchyard proxy http://127.0.0.1:8080 admin http://127.0.0.1:9901 store redis workers 2')).toEqual(want)
    expect(parseReadyLine('{"level":"info","msg":"worker 12 is ready","worker":12}')).toBeUndefined()
    expect(parseReadyLine('{"msg":"ready"')).toBeUndefined()
  })
})
