/**
 * A TCP link between one switchyard instance and a real redis-server, to fault a single
 * instance's connections without touching the others: the test points the instance's store
 * url at the link, and can cut its connections and keep one kind from coming back.
 *
 * The store names its two connections (`CLIENT SETNAME switchyard:<prefix>:cmd` and `:sub`,
 * the first command ioredis sends), so the link tells them apart by their first bytes.
 */
import { connect, createServer, type Server, type Socket } from 'node:net'

export type Kind = 'cmd' | 'sub' | 'unknown'

export interface TcpLink {
  url: string
  port: number
  /** Destroys the open connections of these kinds (both by default): an abrupt network fault. */
  cut(kinds?: Kind[]): void
  /** From now on, closes connections of this kind as soon as they identify themselves. */
  block(kind: Kind): void
  unblock(kind: Kind): void
  /** Open connections per kind. */
  open(kind: Kind): number
  close(): Promise<void>
}

function kindOf(firstBytes: string): Kind {
  if (/switchyard:[^\r\n]*:cmd/.test(firstBytes)) return 'cmd'
  if (/switchyard:[^\r\n]*:sub/.test(firstBytes)) return 'sub'
  return 'unknown'
}

export async function startTcpLink(redisPort: number): Promise<TcpLink> {
  const conns = new Map<Socket, { kind: Kind; upstream: Socket }>()
  const blocked = new Set<Kind>()
  const server: Server = createServer((client) => {
    const upstream = connect(redisPort, '127.0.0.1')
    const entry = { kind: 'unknown' as Kind, upstream }
    conns.set(client, entry)
    const drop = () => {
      conns.delete(client)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop)
    upstream.on('error', drop)
    client.on('close', drop)
    upstream.on('close', drop)
    client.once('data', (first: Buffer) => {
      entry.kind = kindOf(first.toString('latin1'))
      if (blocked.has(entry.kind)) return drop()
      upstream.write(first)
      client.pipe(upstream)
      upstream.pipe(client)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    cut(kinds = ['cmd', 'sub', 'unknown']) {
      for (const [client, { kind, upstream }] of conns) {
        if (!kinds.includes(kind)) continue
        conns.delete(client)
        client.destroy()
        upstream.destroy()
      }
    },
    block: (kind) => void blocked.add(kind),
    unblock: (kind) => void blocked.delete(kind),
    open: (kind) => [...conns.values()].filter((c) => c.kind === kind).length,
    close: () =>
      new Promise<void>((resolve) => {
        for (const [client, { upstream }] of conns) {
          client.destroy()
          upstream.destroy()
        }
        conns.clear()
        server.close(() => resolve())
      }),
  }
}
