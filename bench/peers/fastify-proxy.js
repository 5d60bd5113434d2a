// Peer: a bare fastify + @fastify/http-proxy in front of the backend.
// Usage: node bench/peers/fastify-proxy.js PORT UPSTREAM_URL
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'

const [port, upstream] = process.argv.slice(2)
const app = Fastify({ logger: false })
await app.register(proxy, { upstream })
await app.listen({ host: '127.0.0.1', port: Number(port) })
process.on('SIGTERM', () => process.exit(0))
