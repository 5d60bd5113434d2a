// Deploy-bench backend: one instance of one API version, in its own process (so the bench can
// SIGKILL it). Node's http defaults (keep-alive timeout 5 s), as a real Node service has.
// Usage: node bench/peers/versioned-backend.js NAME PORT      (NAME like v1-a: version v1)
//
// GET /healthz → 200 "ok". Any other request: the body is consumed and hashed as it streams,
// and the answer is JSON {v, name, req, len, sha1}: `req` echoes the x-bench-req header, so
// the bench can tell that each answer belongs to its request and that the body arrived whole.
import { createHash } from 'node:crypto'
import http from 'node:http'

const name = process.argv[2]
const port = Number(process.argv[3])
const version = name.split('-')[0]

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 })
    return res.end('ok')
  }
  const hash = createHash('sha1')
  let len = 0
  req.on('data', (chunk) => { len += chunk.length; hash.update(chunk) })
  req.on('end', () => {
    const body = JSON.stringify({ v: version, name, req: req.headers['x-bench-req'] ?? null, len, sha1: hash.digest('hex') })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  req.on('error', () => res.destroy())
})
server.listen(port, '127.0.0.1')
process.on('SIGTERM', () => process.exit(0))
