/**
 * CLI conventions on every command, on the real CLI (`node dist/cli.js`): --help on stdout with
 * exit 0, --version, unknown options are usage errors (exit 2, usage on stderr), --log-level.
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import { startBackend } from './helpers/backend.js'
import { refused } from './helpers/client.js'
import { CLI, spawnProxy } from './helpers/proxy-process.js'
import { freePort } from './helpers/redis.js'

interface Run {
  code: number
  stdout: string
  stderr: string
}

function cli(args: string[], cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 15_000, cwd }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

async function configFile(port: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-conventions-'))
  const file = join(dir, 'config.yaml')
  await writeFile(file, `listen: { host: 127.0.0.1, port: ${port} }\nadmin: { host: 127.0.0.1, port: 0 }\nupstreams: { v1: { targets: [ { url: "http://127.0.0.1:3001" } ] } }\nroutes: [ { name: api, split: { v1: 1 } } ]\n`)
  return file
}

describe('--help', () => {
  it.each([
    [['--help'], 'usage: switchyard COMMAND'],
    [['-h'], 'usage: switchyard COMMAND'],
    [['start', '--help'], 'usage: switchyard start'],
    [['start', '-h'], 'usage: switchyard start'],
    // help wins over everything else, even a bad option value
    [['start', '--config', 'nope.yaml', '--workers', '0', '--help'], 'usage: switchyard start'],
    [['validate', '--help'], 'usage: switchyard validate'],
    [['demo', '--help'], 'usage: switchyard demo'],
    [['demo-backend', '--help'], 'usage: switchyard demo-backend'],
    [['ctl', '--help'], 'usage: switchyard ctl'],
    [['ctl', 'help'], 'usage: switchyard ctl'],
    [['ctl', 'status', '-h'], 'usage: switchyard ctl'],
    [['ctl', 'split', 'api', 'v1=1', '--help'], 'usage: switchyard ctl'],
    [['ctl', 'flag', 'set', '--help'], 'usage: switchyard ctl'],
  ])('%j: usage on stdout, exit 0', async (args, usage) => {
    const run = await cli(args)
    expect(run).toMatchObject({ code: 0, stderr: '' })
    expect(run.stdout.startsWith(usage)).toBe(true)
  })
})

describe('--version', () => {
  it.each([['--version'], ['-v']])('%s prints the package.json version, from any directory', async (flag) => {
    expect(await cli([flag], tmpdir())).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' })
  })
})

describe('usage errors: exit 2, the problem and the usage on stderr', () => {
  it('start --wrokers 4 is refused before anything listens', async () => {
    const port = await freePort()
    const run = await cli(['start', '--config', await configFile(port), '--wrokers', '4'])
    expect(run.code).toBe(2)
    expect(run.stdout).toBe('')
    expect(run.stderr).toMatch(/^switchyard start: unknown option --wrokers\nusage: switchyard start /)
    expect(await refused(port)).toBe(true)
  })

  it.each([
    [['frobnicate'], 'switchyard: unknown command "frobnicate"', 'usage: switchyard COMMAND'],
    [[], 'switchyard: no command given', 'usage: switchyard COMMAND'],
    [['start'], 'switchyard start: no config file given', 'usage: switchyard start'],
    [['start', '--config'], 'switchyard start: --config needs a value', 'usage: switchyard start'],
    [['start', 'a.yaml', 'b.yaml'], 'switchyard start: unexpected argument "b.yaml"', 'usage: switchyard start'],
    [['start', 'a.yaml', '--log-level', 'loud'], 'switchyard start: --log-level must be one of fatal, error, warn, info, debug, trace, silent', 'usage: switchyard start'],
    [['start', 'a.yaml', '-x'], 'switchyard start: unknown option -x', 'usage: switchyard start'],
    [['validate', '--strict', 'a.yaml'], 'switchyard validate: unknown option --strict', 'usage: switchyard validate'],
    [['validate', 'a.yaml', 'b.yaml'], 'switchyard validate: unexpected argument "b.yaml"', 'usage: switchyard validate'],
    [['demo', '--port', '1'], 'switchyard demo: unknown option --port', 'usage: switchyard demo'],
    [['demo-backend', 'v1', '3001', '--host', 'x'], 'switchyard demo-backend: unknown option --host', 'usage: switchyard demo-backend'],
    [['demo-backend', 'v1', 'port'], 'switchyard demo-backend: PORT must be a number', 'usage: switchyard demo-backend'],
    [['ctl', '--admn', 'http://x', 'status'], 'switchyard ctl: unknown option --admn', 'usage: switchyard ctl'],
    [['ctl', 'status', '--wait', '1s'], 'switchyard ctl: unknown option --wait for status', 'usage: switchyard ctl'],
    [['ctl', 'status', '--json=yes'], 'switchyard ctl: --json takes no value', 'usage: switchyard ctl'],
  ])('%j', async (args, message, usage) => {
    const run = await cli(args)
    expect(run.code).toBe(2)
    expect(run.stdout).toBe('')
    expect(run.stderr).toContain(message)
    expect(run.stderr).toContain(`\n${usage}`)
  })
})

describe('start --log-level', () => {
  async function stopLines(extra: string[]): Promise<string> {
    const b = await startBackend('l')
    onTestFinished(() => b.close())
    const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }, extra)
    onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
    expect(await p.stop('SIGTERM')).toBe(0)
    return p.stdout()
  }

  it('info by default: the shutdown is logged as JSON lines', async () => {
    const lines = (await stopLines([])).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: string; msg: string })
    expect(lines).toContainEqual(expect.objectContaining({ level: 'info', msg: 'SIGTERM: stopping' }))
    expect(lines).toContainEqual(expect.objectContaining({ level: 'info', msg: 'stopped' }))
  })

  it('warn leaves info lines out; the ready record stays (whoever waits for it must not hang)', async () => {
    const lines = (await stopLines(['--log-level', 'warn'])).split('\n').filter((l) => l !== '')
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['ready'])
  })
})
