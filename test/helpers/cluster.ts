/**
 * A real Redis Cluster for one test file: six `redis-server --cluster-enabled yes` processes
 * (three primaries, a replica each, made by `redis-cli --cluster create --cluster-replicas 1`)
 * on free loopback ports, never 6379, without persistence, their `nodes-PORT.conf` files in a
 * temporary folder that stop() removes. Each node's cluster bus gets its own free port
 * (`--cluster-port`), so the usual "port + 10000" can never collide with anything.
 * `--cluster-node-timeout 1000`: a SIGKILLed primary is failed over to its replica in about
 * two and a half seconds (setNodeTimeout changes it at run time). Every node still running when the process exits is SIGKILLed, like the
 * servers of test/helpers/redis.ts.
 */
import { execFile, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { redisBin } from '../setup/redis-available.js'
import { answersPing, freePort, spawnRedisServer, type RedisProcess } from './redis.js'

const NODES = 6
const CLUSTER_OK_TIMEOUT_MS = 15_000
const POLL_INTERVAL_MS = 50
const NODE_TIMEOUT_MS = 1_000

/** The redis-cli next to the redis-server the tests run, else the one on PATH. */
export function redisCliBin(): string {
  const server = redisBin()
  if (server.includes('/')) {
    const beside = join(dirname(server), 'redis-cli')
    if (existsSync(beside)) return beside
  }
  return 'redis-cli'
}

/** Why a Redis Cluster cannot be run here (no redis-cli, a redis-server without cluster mode or `cluster-port`), or null. */
export function clusterProblem(): string | null {
  const cli = spawnSync(redisCliBin(), ['--version'], { encoding: 'utf8', timeout: 10_000 })
  if (cli.error !== undefined || cli.status !== 0) return `cannot run ${redisCliBin()} (it creates the cluster)`
  const version = spawnSync(redisBin(), ['--version'], { encoding: 'utf8', timeout: 10_000 })
  if (version.error !== undefined) return `cannot run ${redisBin()} (${version.error.message})`
  // `--cluster-port` came with Redis 7.0; older servers refuse it as a bad directive.
  const major = Number(/v=(\d+)\./.exec(version.stdout ?? '')?.[1] ?? 0)
  if (major < 7) return `${redisBin()} is older than 7.0 (no --cluster-port)`
  return null
}

export interface ClusterNodeProcess {
  port: number
  busPort: number
  /** True until the process has exited. */
  readonly running: boolean
  /** Sends `signal` (default SIGKILL) and waits for the exit; a no-op once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>
}

/** One line of CLUSTER NODES, as far as the tests need it. */
export interface ClusterNodeInfo {
  id: string
  port: number
  flags: string[]
  /** the primary's id for a replica, else '-' */
  primaryId: string
  /** slot ranges held, inclusive */
  slots: [number, number][]
}

export interface RedisCluster {
  dir: string
  nodes: ClusterNodeProcess[]
  /** What `store.options.clusterNodes` takes: every node's address. */
  clusterNodes: { host: string; port: number }[]
  /** `redis-cli -p <port> <args...>`; resolves with its output (rejects on a failed run). */
  cli(port: number, ...args: string[]): Promise<string>
  /** CLUSTER NODES as seen by the node on `port`. */
  topology(port: number): Promise<ClusterNodeInfo[]>
  /** The slot of `key` (CLUSTER KEYSLOT). */
  slotOf(key: string): Promise<number>
  /** The running primary that serves `slot` and its replica, as seen by a running node. */
  ownerOf(slot: number): Promise<{ primary: ClusterNodeProcess; replica: ClusterNodeProcess }>
  /** Resolves once every running node reports cluster_state:ok with all slots served. */
  waitOk(timeoutMs?: number): Promise<void>
  /** `CONFIG SET cluster-node-timeout <ms>` on every running node (started at 1000 ms). */
  setNodeTimeout(ms: number): Promise<void>
  /** SIGTERM (then SIGKILL) every node, then removes the folder. */
  stop(): Promise<void>
}

function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || stdout || err.message}`)) : resolve(stdout),
    )
  })
}

function spawnNode(dir: string, port: number, busPort: number): Promise<RedisProcess> {
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
    '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`),
    '--cluster-node-timeout', String(NODE_TIMEOUT_MS), '--cluster-port', String(busPort),
  ]
  return spawnRedisServer(args, () => answersPing(port), { cwd: dir, what: `cluster node on port ${port}` })
}

export function parseClusterNodes(text: string): ClusterNodeInfo[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line) => {
      const [id, address, flags, primaryId, , , , , ...slots] = line.split(' ')
      const port = Number(/:(\d+)@/.exec(address ?? '')?.[1])
      return {
        id: id!,
        port,
        flags: (flags ?? '').split(','),
        primaryId: primaryId!,
        slots: slots
          .filter((s) => !s.startsWith('['))
          .map((s) => {
            const [from, to] = s.split('-').map(Number)
            return [from!, to ?? from!] as [number, number]
          }),
      }
    })
}

/** Starts six nodes, joins them into three primaries with a replica each, and waits until the cluster is ok everywhere. */
export async function startCluster(): Promise<RedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-cluster-'))
  const children = new Map<number, RedisProcess>()
  const nodes: ClusterNodeProcess[] = []
  const cli = (port: number, ...args: string[]) => run(redisCliBin(), ['-p', String(port), ...args])
  const runningPort = (): number => {
    const node = nodes.find((n) => n.running)
    if (node === undefined) throw new Error('no cluster node is running')
    return node.port
  }

  const stop = async (): Promise<void> => {
    await Promise.all(
      [...children.values()].map((node) => node.stop()),
    )
    await rm(dir, { recursive: true, force: true })
  }

  const topology = async (port: number) => parseClusterNodes(await cli(port, 'CLUSTER', 'NODES'))
  const waitOk = async (timeoutMs = CLUSTER_OK_TIMEOUT_MS): Promise<void> => {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const infos = await Promise.all(nodes.filter((n) => n.running).map((n) => cli(n.port, 'CLUSTER', 'INFO').catch((err: Error) => err.message)))
      if (infos.every((info) => /cluster_state:ok/.test(info) && /cluster_slots_ok:16384/.test(info))) return
      if (performance.now() >= deadline) throw new Error(`the cluster is not ok on every node after ${timeoutMs} ms:\n${infos.join('\n---\n')}`)
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS))
    }
  }

  try {
    for (let i = 0; i < NODES; i++) {
      let port = await freePort()
      let busPort = await freePort()
      while (busPort === port || children.has(port) || children.has(busPort)) {
        port = await freePort()
        busPort = await freePort()
      }
      const node = await spawnNode(dir, port, busPort)
      children.set(port, node)
      nodes.push({
        port,
        busPort,
        get running() {
          return !node.exited()
        },
        kill: (signal) => node.kill(signal),
      })
    }
    await run(redisCliBin(), ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'], 30_000)
    await waitOk()
    // Every replica linked to its primary and synced: only then can it take over.
    const deadline = performance.now() + CLUSTER_OK_TIMEOUT_MS
    for (;;) {
      const roles = await Promise.all(nodes.map((n) => cli(n.port, 'INFO', 'replication')))
      const replicas = roles.filter((r) => /role:slave/.test(r))
      if (replicas.length === NODES / 2 && replicas.every((r) => /master_link_status:up/.test(r) && /master_sync_in_progress:0/.test(r))) break
      if (performance.now() >= deadline) throw new Error(`the replicas did not sync:\n${roles.join('\n---\n')}`)
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS))
    }
  } catch (err) {
    await stop()
    throw err
  }

  return {
    dir,
    nodes,
    clusterNodes: nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    cli,
    topology,
    async slotOf(key) {
      return Number((await cli(runningPort(), 'CLUSTER', 'KEYSLOT', key)).trim())
    },
    async ownerOf(slot) {
      const seen = await topology(runningPort())
      const owner = seen.find((n) => n.flags.includes('master') && !n.flags.includes('fail') && n.slots.some(([from, to]) => from <= slot && slot <= to))
      if (owner === undefined) throw new Error(`no primary serves slot ${slot}`)
      const replicaInfo = seen.find((n) => n.primaryId === owner.id && n.flags.includes('slave') && !n.flags.includes('fail'))
      if (replicaInfo === undefined) throw new Error(`the primary on port ${owner.port} has no live replica`)
      const byPort = (port: number) => {
        const node = nodes.find((n) => n.port === port)
        if (node === undefined) throw new Error(`port ${port} is not one of this cluster's nodes`)
        return node
      }
      return { primary: byPort(owner.port), replica: byPort(replicaInfo.port) }
    },
    waitOk,
    async setNodeTimeout(ms) {
      await Promise.all(nodes.filter((n) => n.running).map((n) => cli(n.port, 'CONFIG', 'SET', 'cluster-node-timeout', String(ms))))
    },
    stop,
  }
}
