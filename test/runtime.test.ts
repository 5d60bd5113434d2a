/**
 * The runtime: switchyard runs on the supported Node.js LTS lines (22.19+, 24) and says so.
 * In CI (.ci/run) SWITCHYARD_TEST_NODE_MAJOR names the Node the suite was started on (24 for
 * every test, 22 for the smoke subset): the processes the tests spawn must run exactly that one.
 */
import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MIN_NODE, unsupportedNode } from '../src/cli/node-version.js'
import { startBackend, type Backend } from './helpers/backend.js'
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
