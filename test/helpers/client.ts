/** An HTTP client for tests: undici with keep-alive, answers read whole. */
import { connect } from 'node:net'
import { Agent, request } from 'undici'

export const agent = new Agent({ connections: 64, keepAliveTimeout: 2_000 })

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
  json<T = Record<string, unknown>>(): T
}

export async function hit(
  url: string,
  opts: { method?: string; headers?: Record<string, string> | string[]; body?: string | Buffer; localAddress?: string } = {},
): Promise<Answer> {
  const res = await request(url, {
    method: (opts.method ?? 'GET') as 'GET',
    headers: opts.headers,
    body: opts.body,
    dispatcher: agent,
  })
  const body = await res.body.text()
  return {
    status: res.statusCode,
    headers: res.headers,
    body,
    json: <T>() => JSON.parse(body) as T,
  }
}

/** Runs `total` calls of `fn` with at most `concurrency` at a time; returns their results in order. */
export async function many<T>(total: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(total)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(concurrency, total) }, async () => {
      while (next < total) {
        const i = next++
        out[i] = await fn(i)
      }
    }),
  )
  return out
}

/**
 * Sends a hand-written HTTP/1.1 request over a raw socket (for headers undici refuses to send,
 * such as Keep-Alive or TE) and resolves with the whole response text once the server closes.
 */
export function rawHttp(port: number, head: string[], body = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    // No half-close: Node's server (like most) treats a client FIN as an abort of its request.
    // Send `Connection: close` in `head` so the server closes after answering.
    const socket = connect(port, '127.0.0.1', () => socket.write(head.join('\r\n') + '\r\n\r\n' + body))
    let out = ''
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => (out += d))
    socket.on('error', reject)
    socket.on('close', () => resolve(out))
  })
}

/** True when nothing listens on 127.0.0.1:`port` (the connection is refused). */
export function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
  })
}
