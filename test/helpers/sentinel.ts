/**
 * A real Redis Sentinel deployment for tests: one primary, one replica and three
 * `redis-server --sentinel` processes (quorum 2) watching them under the name `mymaster`,
 * each on a free loopback port (never 6379), without persistence, with its files in one
 * temp dir that `stop()` removes. The sentinels judge a node down after 500 ms, so a
 * SIGKILLed primary is replaced within a few seconds.
 *
 * Every process is killed by `stop()`; the exit hook kills any a test left behind.
 * Commands to the nodes go through short-lived ioredis connections (`command`).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { eventually } from './eventually.js'
import { answersPing, freePort, spawnRedisServer, type RedisProcess } from './redis.js'

export const MASTER_NAME = 'mymaster'
/** Sentinel `down-after-milliseconds`: how long a node may stay silent before it is judged down. */
export const DOWN_AFTER_MS = 500
/** Sentinel `failover-timeout`: also how soon a failover that found no good replica is retried (twice this). */
export const FAILOVER_TIMEOUT_MS = 1_000

const READY_TIMEOUT_MS = 15_000

export interface RedisNode {
  readonly port: number
  /** Sends `signal` (default SIGKILL) and waits for the exit; a no-op once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>
  /** SIGSTOP: the process stops; the kernel still accepts and buffers for its sockets. */
  pause(): void
  /** SIGCONT after pause(). */
  resume(): void
  readonly exited: boolean
}

export interface SentinelDeployment {
  readonly name: string
  readonly primary: RedisNode
  readonly replica: RedisNode
  readonly sentinels: RedisNode[]
  /** What ioredis takes as `sentinels`. */
  readonly addresses: { host: string; port: number }[]
  /** The port the sentinel on `sentinelPort` (default the first) names as the primary. */
  masterPort(sentinelPort?: number): Promise<number>
  /** Resolves once every sentinel names `port` as the primary and that node says it is one. */
  waitForPrimary(port: number, timeoutMs: number): Promise<void>
  /** Kills every process (SIGTERM, SIGKILL after 2 s) and removes the temp dir. */
  stop(): Promise<void>
}

/** Starts primary and replica, waits until the replica is in sync, then starts the sentinels and waits until they know each other. */
export async function startSentinelDeployment(): Promise<SentinelDeployment> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-sentinel-'))
  const nodes: Node[] = []
  try {
    const base = ['--save', '', '--appendonly', 'no', '--bind', '127.0.0.1', '--dir', dir]
    // Diskless full sync without its default 5 s delay: the replica is in sync at once.
    const repl = ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0']
    const primaryPort = await freePort()
    const primary = await startNode(nodes, primaryPort, [...base, ...repl, '--port', String(primaryPort)])
    const replicaPort = await freePort()
    const replica = await startNode(nodes, replicaPort, [...base, ...repl, '--port', String(replicaPort), '--replicaof', '127.0.0.1', String(primaryPort)])
    await eventually(async () => {
      if (!/master_link_status:up/.test(String(await command(replicaPort, 'INFO', 'replication')))) throw new Error(`replica on ${replicaPort} not in sync yet`)
    }, { timeoutMs: READY_TIMEOUT_MS, intervalMs: 50 })

    const sentinels: Node[] = []
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      const conf = join(dir, `sentinel-${port}.conf`)
      writeFileSync(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${primaryPort} 2`,
          `sentinel down-after-milliseconds ${MASTER_NAME} ${DOWN_AFTER_MS}`,
          `sentinel failover-timeout ${MASTER_NAME} ${FAILOVER_TIMEOUT_MS}`,
          `sentinel parallel-syncs ${MASTER_NAME} 1`,
          '',
        ].join('\n'),
      )
      sentinels.push(await startNode(nodes, port, [conf, '--sentinel']))
    }
    // A failover needs a majority of the sentinels to know each other (hello messages every
    // 2 s on the primary) and to have found the replica.
    await eventually(async () => {
      for (const s of sentinels) {
        const peers = (await command(s.port, 'SENTINEL', 'SENTINELS', MASTER_NAME)) as unknown[]
        const replicas = (await command(s.port, 'SENTINEL', 'REPLICAS', MASTER_NAME)) as string[][]
        if (peers.length !== 2 || replicas.length !== 1) throw new Error(`sentinel ${s.port} knows ${peers.length} peers and ${replicas.length} replicas`)
        if (field(replicas[0]!, 'port') !== String(replicaPort) || field(replicas[0]!, 'master-link-status') !== 'ok') throw new Error(`sentinel ${s.port}: replica not seen in sync yet`)
      }
    }, { timeoutMs: READY_TIMEOUT_MS, intervalMs: 100 })

    const masterPort = async (sentinelPort = sentinels[0]!.port): Promise<number> => {
      const [, port] = (await command(sentinelPort, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME)) as [string, string]
      return Number(port)
    }
    return {
      name: MASTER_NAME,
      primary,
      replica,
      sentinels,
      addresses: sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
      masterPort,
      async waitForPrimary(port, timeoutMs) {
        await eventually(async () => {
          for (const s of sentinels) if ((await masterPort(s.port)) !== port) throw new Error(`sentinel ${s.port} does not name ${port} yet`)
          if (!/role:master/.test(String(await command(port, 'INFO', 'replication')))) throw new Error(`${port} is not a primary yet`)
        }, { timeoutMs, intervalMs: 50 })
      },
      stop: () => stopAll(nodes, dir),
    }
  } catch (err) {
    await stopAll(nodes, dir)
    throw err
  }
}

/** One command on a fresh connection to 127.0.0.1:`port`, which is closed after the reply. */
export async function command(port: number, ...args: (string | number)[]): Promise<unknown> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, connectTimeout: 1_000, commandTimeout: 2_000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => {}) // the call below rejects with it
  try {
    await client.connect()
    const [name, ...rest] = args
    return await client.call(String(name), ...rest)
  } finally {
    client.disconnect()
  }
}

interface Node extends RedisNode {
  readonly server: RedisProcess
}

async function startNode(nodes: Node[], port: number, args: string[]): Promise<Node> {
  const server = await spawnRedisServer(args, () => answersPing(port))
  const node: Node = {
    port,
    server,
    get exited() {
      return server.exited()
    },
    kill: (signal) => server.kill(signal),
    pause: () => void server.child.kill('SIGSTOP'),
    resume: () => void server.child.kill('SIGCONT'),
  }
  nodes.push(node)
  return node
}

async function stopAll(nodes: Node[], dir: string): Promise<void> {
  await Promise.all(nodes.map((node) => node.server.stop()))
  rmSync(dir, { recursive: true, force: true })
}

/** A field of a SENTINEL REPLICAS entry (a flat name, value, name, value... list). */
function field(flat: string[], name: string): string | undefined {
  const i = flat.indexOf(name)
  return i >= 0 && i % 2 === 0 ? flat[i + 1] : undefined
}
