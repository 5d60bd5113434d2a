// Peer: the "Node limit" — node:http in, undici Pool (keep-alive) out, streaming both ways.
// Usage: node bench/peers/bare-undici.js PORT UPSTREAM_URL
import http from 'node:http'
import { Pool } from 'undici'

const [port, upstream] = process.argv.slice(2)
const pool = new Pool(upstream, { connections: 128, keepAliveTimeout: 60_000 })
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te',
  'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization'])
const strip = (headers) => {
  const out = {}
  for (const k in headers) if (!HOP.has(k)) out[k] = headers[k]
  return out
}

const server = http.createServer((req, res) => {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
  pool.stream(
    { path: req.url, method: req.method, headers: strip(req.headers), body: hasBody ? req : null, opaque: res },
    ({ statusCode, headers, opaque }) => { opaque.writeHead(statusCode, strip(headers)); return opaque }
  ).catch(() => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' })
    res.end('{"error":{"code":"UPSTREAM_ERROR","message":"upstream failed"}}')
  })
})
server.keepAliveTimeout = 300_000
server.listen(Number(port), '127.0.0.1')
process.on('SIGTERM', () => server.close(() => process.exit(0)))
