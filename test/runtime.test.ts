/**
 * The runtime: switchyard runs on the supported Node.js LTS lines (22.19+, 24) and says so.
 * In CI (.ci/run) SWITCHYARD_TEST_NODE_MAJOR names the Node the suite was started on (24 for
 * every test, 22 for the smoke subset): the processes the tests spawn must run exactly that one.
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TUNING_FLAGS, tuningToAdd } from '../src/cli/node-tuning.js'
import { MIN_NODE, unsupportedNode } from '../src/cli/node-version.js'
import { startBackend, type Backend } from './helpers/backend.js'
import { eventually } from './helpers/eventually.js'
import { parseStrict } from './helpers/prom-text.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'

const PKG = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { engines: { node: string } }

describe('supported Node.js versions', () => {
  it('package.json engines names the same floor as the CLI checks', () => {
    expect(PKG.engines.node).toBe(`>=${MIN_NODE.replace(/\.0$/, '')}`)
  })

  it.each([
    ['20.20.2', false],
    ['22.18.0', false],
    ['22.19.0', true],
    ['22.23.5', true],
    ['23.0.0', true],
    ['24.22.3', true],
    ['26.12.1', true],
  ])('Node.js %s runs switchyard: %s', (version, ok) => {
    const why = unsupportedNode(version)
    if (ok) expect(why).toBeNull()
    else expect(why).toBe(`needs Node.js 22.19.0 or newer (22 or 24 LTS); this is Node.js ${version}`)
  })
})

describe('the proxy a test spawns', () => {
  let backend: Backend
  let proxy: ProxyProcess
  beforeAll(async () => {
    backend = await startBackend('v1')
    proxy = await spawnProxy({ upstreams: { v1: { targets: [{ url: backend.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
  })
  afterAll(async () => {
    await proxy?.stop()
    await backend?.close()
  })

  it('reports the Node.js it runs on in /metrics (switchyard_build_info), a supported one, the one the suite runs on', async () => {
    const res = await fetch(`${proxy.adminUrl}/metrics`)
    expect(res.status).toBe(200)
    const build = parseStrict(await res.text()).samples.filter((s) => s.name === 'switchyard_build_info')
    expect(build).toHaveLength(1)
    const node = build[0]!.labels.node!
    expect(node).toMatch(/^\d+\.\d+\.\d+$/)
    expect(unsupportedNode(node)).toBeNull()
    // Tests spawn process.execPath: the proxy runs the Node that runs the suite.
    expect(node).toBe(process.versions.node)
    const wanted = process.env.SWITCHYARD_TEST_NODE_MAJOR
    if (wanted !== undefined) expect(node.split('.')[0]).toBe(wanted)
  })

  it('proxies a request on it', async () => {
    const res = await fetch(`${proxy.url}/hello`)
    expect(res.status).toBe(200)
    await res.arrayBuffer()
  })
})

describe('the memory settings the CLI runs start and demo with', () => {
  const ENV = { MALLOC_ARENA_MAX: '2', MALLOC_TRIM_THRESHOLD_: '131072' }
  const ALL = { flags: [...TUNING_FLAGS], env: ENV }
  const without = (flag: string) => TUNING_FLAGS.filter((f) => f !== flag)

  it.each([
    ['a plain start', [], {}, ALL],
    ['already tuned', [...TUNING_FLAGS], ENV, null],
    ['tuned, with an own MALLOC_ARENA_MAX', [...TUNING_FLAGS], { MALLOC_ARENA_MAX: '8' }, null],
    ['an own young generation size (underscores too)', ['--max_semi_space_size=16'], {}, { flags: without('--max-semi-space-size=8'), env: ENV }],
    ['pretenuring turned on by the user', ['--allocation-site-pretenuring'], {}, { flags: without('--no-allocation-site-pretenuring'), env: ENV }],
    ['maglev turned on by the user', ['--maglev'], {}, { flags: without('--no-maglev'), env: ENV }],
    ['flags in NODE_OPTIONS', [], { NODE_OPTIONS: '--max-semi-space-size=32 --inspect' }, { flags: without('--max-semi-space-size=8'), env: ENV }],
    ['an own MALLOC_ARENA_MAX', [], { MALLOC_ARENA_MAX: '4' }, { flags: [...TUNING_FLAGS], env: { MALLOC_TRIM_THRESHOLD_: '131072' } }],
    ['turned off', [], { SWITCHYARD_NODE_TUNING: 'off' }, null],
  ])('%s', (_what, execArgv, env, wanted) => {
    expect(tuningToAdd(execArgv, env)).toEqual(wanted)
  })

  const config = (url: string) => ({ upstreams: { v1: { targets: [{ url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
  const cmdline = async (pid: number) => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean)
  const environ = async (pid: number) => (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter(Boolean)

  it('a spawned `start` runs with them, as the same process (same pid), and its workers too', async () => {
    const backend = await startBackend('v1')
    const p = await spawnProxy(config(backend.url), ['--workers', '2'])
    try {
      // The pid the test spawned is the one that serves: the CLI re-executed itself in place.
      const argv = await cmdline(p.pid)
      expect(argv.slice(1, 1 + TUNING_FLAGS.length)).toEqual([...TUNING_FLAGS])
      expect(await environ(p.pid)).toEqual(expect.arrayContaining(['MALLOC_ARENA_MAX=2', 'MALLOC_TRIM_THRESHOLD_=131072']))
      // Both workers registered (each registers once it is ready).
      const workers = await eventually(async () => {
        const res = await fetch(`${p.adminUrl}/api/instances`)
        const pids = ((await res.json()) as { instances: { pid: number }[] }).instances.map((i) => i.pid)
        expect(pids).toHaveLength(2)
        return pids
      })
      for (const pid of workers) {
        expect(pid).not.toBe(p.pid)
        const w = await cmdline(pid)
        for (const f of TUNING_FLAGS) expect(w).toContain(f)
        expect(await environ(pid)).toEqual(expect.arrayContaining(['MALLOC_ARENA_MAX=2', 'MALLOC_TRIM_THRESHOLD_=131072']))
      }
      expect((await fetch(`${p.url}/x`)).status).toBe(200)
    } finally {
      await p.stop()
      await backend.close()
    }
  })

  it('SWITCHYARD_NODE_TUNING=off leaves the process as it was started', async () => {
    const backend = await startBackend('v1')
    const p = await spawnProxy(config(backend.url), [], [], { SWITCHYARD_NODE_TUNING: 'off' })
    try {
      const argv = await cmdline(p.pid)
      for (const f of TUNING_FLAGS) expect(argv).not.toContain(f)
      expect((await fetch(`${p.url}/x`)).status).toBe(200)
    } finally {
      await p.stop()
      await backend.close()
    }
  })
})
