/**
 * Backends for mirroring tests: each records what it received (method, path, shadow marker,
 * body size) and answers JSON made by a function of the request; a backend can hold its
 * answers until released, to show that nobody waits for it. Closed after the current test.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { onTestFinished } from 'vitest'

export interface Received {
  method: string
  url: string
  shadow: string | undefined
  bodyBytes: number
}

export interface ShadowBackend {
  url: string
  id: string
  received: Received[]
  /** answers not sent yet while held */
  held: number
  /** requests answered so far */
  answered: number
  /** from now on, answers wait until `release()` */
  hold(): void
  release(): void
}

/** `answer(path)` (the path without its query) gives the JSON document to send for a path (default `{name}`), `status(path)` its status (default 200). */
export async function shadowBackend(name: string, answer: (path: string) => unknown = () => ({ name }), status: (path: string) => number = () => 200): Promise<ShadowBackend> {
  let holding = false
  let waiting: (() => void)[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let bytes = 0
    req.on('data', (c: Buffer) => (bytes += c.length))
    req.on('end', () => {
      const h = req.headers['x-switchyard-shadow']
      b.received.push({ method: req.method!, url: req.url!, shadow: Array.isArray(h) ? h.join(',') : h, bodyBytes: bytes })
      const send = () => {
        b.answered++
        const path = req.url!.split('?', 1)[0]!
        res.statusCode = status(path)
        res.setHeader('content-type', 'application/json')
        res.setHeader('x-backend', name)
        res.end(JSON.stringify(answer(path)))
      }
      if (holding) {
        b.held++
        waiting.push(() => {
          b.held--
          send()
        })
      } else send()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  const b: ShadowBackend = {
    url: `http://127.0.0.1:${port}`,
    id: `127.0.0.1:${port}`,
    received: [],
    held: 0,
    answered: 0,
    hold: () => void (holding = true),
    release: () => {
      holding = false
      const w = waiting
      waiting = []
      for (const f of w) f()
    },
  }
  onTestFinished(() => {
    b.release()
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return b
}
