// Bench backend (used when nginx is not installed): a small JSON body, keep-alive.
// Usage: node bench/peers/backend.js PORT
import http from 'node:http'

const port = Number(process.argv[2])
const BODY = Buffer.from('{"ok":true,"service":"switchyard-bench-backend","message":"hello from the backend","n":12345}')

const server = http.createServer((req, res) => {
  req.resume()
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length })
  res.end(BODY)
})
server.keepAliveTimeout = 300_000
server.headersTimeout = 301_000
server.listen(port, '127.0.0.1')
process.on('SIGTERM', () => process.exit(0))
