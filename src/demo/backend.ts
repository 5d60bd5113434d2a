/**
 * The demo API versions `npm start` runs: tiny node:http servers that answer which version and
 * instance served the request and which flags the proxy passed, so routing is visible in curl.
 */
import { createServer, type Server } from 'node:http'

export function startDemoBackend(version: string, port: number, host = '127.0.0.1'): Promise<Server> {
  const instance = `${version}@${port}`
  const server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.end('ok')
      return
    }
    const body = JSON.stringify({
      version,
      instance,
      method: req.method,
      path: req.url,
      user: req.headers['x-user-id'] ?? null,
      flags: req.headers['x-switchyard-flags'] ?? null,
    })
    res.writeHead(200, { 'content-type': 'application/json', 'x-api-version': version, 'x-instance': instance })
    res.end(body + '\n')
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve(server))
  })
}
