/** The real CLI (`node dist/cli.js start`) as a child process, for tests about processes and memory. */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from './redis.js'

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))

const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL')
})

export interface ProxyProcess {
  child: ChildProcess
  pid: number
  /** the config file it runs, to edit before a SIGHUP */
  configFile: string
  url: string
  adminUrl: string
  /** what its ready line said (the JSON record, or the plain line of --log-format pretty) */
  ready: ReadyLine
  stdout(): string
  stderr(): string
  /** Sends `signal` and resolves with the exit code (or signal name). */
  stop(signal?: NodeJS.Signals): Promise<number | string>
}

export interface ReadyLine {
  proxy: string
  admin: string
  store: string
  workers?: number
}

/**
 * The ready line in `line`, if it is one: the JSON record `{"msg":"ready","proxy",...}`, or the
 * plain `switchyard proxy URL admin URL store TYPE [workers N]` of --log-format pretty.
 */
export function parseReadyLine(line: string): ReadyLine | undefined {
  const plain = /^switchyard proxy (\S+) admin (\S+) store (\S+)(?: workers (\d+))?$/.exec(line)
  if (plain) return { proxy: plain[1]!, admin: plain[2]!, store: plain[3]!, ...(plain[4] === undefined ? {} : { workers: Number(plain[4]) }) }
  if (!line.startsWith('{')) return undefined
  try {
    const r = JSON.parse(line) as Partial<ReadyLine> & { msg?: unknown }
    if (r.msg !== 'ready' || typeof r.proxy !== 'string' || typeof r.admin !== 'string' || typeof r.store !== 'string') return undefined
    return { proxy: r.proxy, admin: r.admin, store: r.store, ...(typeof r.workers === 'number' ? { workers: r.workers } : {}) }
  } catch {
    return undefined
  }
}

/** Writes `config` (listen/admin ports filled in with free ports) and starts the CLI on it. */
export async function spawnProxy(
  config: Record<string, unknown>,
  extraArgs: string[] = [],
  nodeFlags: string[] = [],
  /** added to this process's environment */
  env: NodeJS.ProcessEnv = {},
): Promise<ProxyProcess> {
  const port = await freePort()
  const adminPort = await freePort()
  // A Redis store here is a new one, with no fleet to wait for at start, unless the test says so.
  const store = config['store'] as { type?: string; seedWaitMs?: number } | undefined
  const withStore = store?.type === 'redis' ? { ...config, store: { seedWaitMs: 0, ...store } } : config
  const full = { listen: { host: '127.0.0.1', port }, admin: { host: '127.0.0.1', port: adminPort }, shutdownTimeoutMs: 5_000, ...withStore }
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-'))
  const file = join(dir, 'config.json')
  await writeFile(file, JSON.stringify(full))
  const child = spawn(process.execPath, [...nodeFlags, CLI, 'start', '--config', file, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  live.add(child)
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => (out += d))
  child.stderr!.on('data', (d: Buffer) => (err += d))
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      live.delete(child)
      resolve(code ?? signal ?? -1)
    }),
  )
  const ready = await new Promise<ReadyLine>((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`proxy did not start in 15 s: ${err}`)), 15_000)
    let scanned = 0 // complete lines before this offset were not the ready line
    const check = () => {
      for (let end = out.indexOf('\n', scanned); end >= 0; end = out.indexOf('\n', scanned)) {
        const found = parseReadyLine(out.slice(scanned, end))
        scanned = end + 1
        if (found === undefined) continue
        clearTimeout(deadline)
        child.stdout!.off('data', check)
        return resolve(found)
      }
    }
    child.stdout!.on('data', check)
    void exited.then((code) => {
      clearTimeout(deadline)
      reject(new Error(`proxy exited with ${code}: ${err}`))
    })
  })
  return {
    child,
    pid: child.pid!,
    configFile: file,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    ready,
    stdout: () => out,
    stderr: () => err,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}
