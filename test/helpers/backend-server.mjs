// A test backend, usable in-process (import) or as its own process (node backend-server.mjs NAME [PORT]),
// so tests can SIGKILL it. Plain JS so a child process can run it without a build step.
import { createServer } from 'node:http'
import { createHash } from 'node:crypto'
import { WebSocketServer } from 'ws'

/** Starts a backend; resolves with { server, port, url, name, aborts, requests }. */
export function createBackend({ name = 'backend', port = 0, host = '127.0.0.1' } = {}) {
  const state = { aborts: 0, requests: 0, lastHeaders: null }
  const server = createServer((req, res) => {
    state.requests++
    state.lastHeaders = req.rawHeaders
    const url = new URL(req.url, 'http://x')
    res.setHeader('x-backend', name)
    const q = (k, d) => (url.searchParams.has(k) ? Number(url.searchParams.get(k)) : d)
    switch (url.pathname) {
      case '/healthz':
        res.end('ok')
        return
      case '/upload': {
        const hash = createHash('sha256')
        let bytes = 0
        req.on('data', (c) => {
          hash.update(c)
          bytes += c.length
        })
        req.on('end', () => {
          res.setHeader('content-type', 'application/json')
          res.end(JSON.stringify({ name, bytes, sha256: hash.digest('hex') }))
        })
        return
      }
      case '/delay':
        setTimeout(() => res.end(JSON.stringify({ name })), q('ms', 100))
        return
      case '/status':
        res.statusCode = q('code', 200)
        res.end(JSON.stringify({ name }))
        return
      case '/stream': {
        // Endless slow stream; counts how often the client side (the proxy) aborted it.
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        const chunk = Buffer.alloc(q('chunk', 1024), 97)
        const timer = setInterval(() => res.write(chunk), q('every', 10))
        res.on('close', () => {
          clearInterval(timer)
          if (!res.writableFinished) state.aborts++
        })
        return
      }
      case '/bytes': {
        const total = q('n', 1024 * 1024)
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) })
        const chunk = Buffer.alloc(64 * 1024, 98)
        let sent = 0
        const pump = () => {
          while (sent < total) {
            const n = Math.min(chunk.length, total - sent)
            sent += n
            if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return res.once('drain', pump)
          }
          res.end()
        }
        pump()
        return
      }
      case '/hop':
        res.setHeader('connection', 'keep-alive, x-hop-custom')
        res.setHeader('keep-alive', 'timeout=5')
        res.setHeader('x-hop-custom', 'should-be-removed')
        res.setHeader('proxy-connection', 'keep-alive')
        res.setHeader('x-end-to-end', 'kept')
        res.setHeader('set-cookie', ['a=1', 'b=2'])
        res.end('hop')
        return
      default: {
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify({ name, method: req.method, url: req.url, rawHeaders: req.rawHeaders }))
      }
    }
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(isBinary ? data : `${name}:${data}`, { binary: isBinary }))
    ws.on('error', () => {})
  })
  return new Promise((resolve) => {
    server.listen(port, host, () => {
      const p = server.address().port
      resolve({ server, wss, state, port: p, name, url: `http://${host}:${p}`, id: `${host}:${p}` })
    })
  })
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop())) {
  const b = await createBackend({ name: process.argv[2] ?? 'backend', port: Number(process.argv[3] ?? 0) })
  process.stdout.write(JSON.stringify({ port: b.port }) + '\n')
}
