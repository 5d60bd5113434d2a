/**
 * A real `redis-server` that speaks only TLS, with test certificates made by `openssl` into a
 * temporary folder, and ACL users set up through an admin connection: what a managed or
 * hardened Redis looks like to switchyard. The plain port is off (`--port 0`), persistence too,
 * and the folder is removed by stop(). Every server still running when the process exits is
 * SIGKILLed, like those of test/helpers/redis.ts.
 */
import { execFile, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { Redis } from 'ioredis'
import { redisBin } from '../setup/redis-available.js'
import { freePort, spawnRedisServer, type RedisProcess } from './redis.js'


/** Why TLS Redis tests cannot run here (no openssl, or a redis-server built without TLS), or null. */
export function tlsRedisProblem(): string | null {
  const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8', timeout: 10_000 })
  if (openssl.error !== undefined || openssl.status !== 0) return 'openssl is not installed (it makes the test certificates)'
  // A redis-server built without TLS refuses `tls-*` as a bad directive; one with TLS gets as far
  // as configuring it and exits at once on the missing files, listening on nothing.
  const probe = spawnSync(redisBin(), ['--port', '0', '--tls-port', '1', '--tls-cert-file', '/nonexistent', '--tls-key-file', '/nonexistent', '--save', '', '--appendonly', 'no'], { encoding: 'utf8', timeout: 10_000 })
  if (probe.error !== undefined) return `cannot run ${redisBin()} (${probe.error.message})`
  if (/bad directive/i.test(`${probe.stdout}${probe.stderr}`)) return `${redisBin()} was built without TLS support`
  return null
}

export interface TestCertificates {
  dir: string
  /** PEM of the CA that signed the server's certificate. */
  caPem: string
  caFile: string
  /** PEM of another CA, which signed nothing this server presents: a client trusting only it must refuse. */
  otherCaPem: string
  otherCaFile: string
  serverCert: string
  serverKey: string
}

function run(cmd: string, args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, timeout: 20_000 }, (err, _stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : resolve()))
  })
}

/** A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA (EC P-256: fast to make). */
export async function makeCertificates(dir: string): Promise<TestCertificates> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  const caExtensions = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']
  for (const ca of ['ca', 'other-ca']) {
    await run('openssl', ['req', '-x509', ...ec, '-keyout', `${ca}.key`, '-out', `${ca}.pem`, '-days', '2', '-subj', `/CN=switchyard ${ca}`, ...caExtensions], dir)
  }
  await run('openssl', ['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=switchyard test redis'], dir)
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
  await run('openssl', ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext'], dir)
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    caPem: await readFile(join(dir, 'ca.pem'), 'utf8'),
    otherCaFile: join(dir, 'other-ca.pem'),
    otherCaPem: await readFile(join(dir, 'other-ca.pem'), 'utf8'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
  }
}

export interface TlsRedis {
  port: number
  certs: TestCertificates
  /** The default user's password (the default user is kept, with a password, as the admin). */
  adminPassword: string
  /** An admin connection (the default user) over TLS, for ACL SETUSER, ACL LOG and checks. */
  admin: Redis
  /** `ACL SETUSER <name> <rules...>`; resolves once the server accepted it. */
  setUser(name: string, rules: string[]): Promise<void>
  /** SIGTERM (then SIGKILL after 2 s), waits for the exit, removes the folder. */
  stop(): Promise<void>
}

/**
 * Starts `redis-server --port 0 --tls-port P` with the generated certificates; clients need no
 * certificate of their own (`--tls-auth-clients no`). The default user gets a random password.
 */
export async function startTlsRedis(): Promise<TlsRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-redis-tls-'))
  let server: RedisProcess | undefined
  let admin: Redis | undefined
  try {
    const certs = await makeCertificates(dir)
    const adminPassword = randomBytes(16).toString('hex')
    const port = await freePort()
    const args = [
      ...['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1'],
      ...['--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey, '--tls-ca-cert-file', certs.caFile, '--tls-auth-clients', 'no'],
      ...['--save', '', '--appendonly', 'no', '--dir', dir, '--requirepass', adminPassword],
    ]
    const spawned = await spawnRedisServer(args, () => tlsPing(port, certs.caPem), { what: `redis-server (TLS) on port ${port}` })
    server = spawned
    admin = new Redis({ host: '127.0.0.1', port, password: adminPassword, tls: { ca: certs.caPem }, lazyConnect: true, maxRetriesPerRequest: 1 })
    admin.on('error', () => {}) // failures reach the commands that need it
    await admin.connect()
    const adminClient = admin
    return {
      port,
      certs,
      adminPassword,
      admin: adminClient,
      async setUser(name, rules) {
        await adminClient.call('ACL', 'SETUSER', name, ...rules)
      },
      async stop() {
        adminClient.disconnect()
        await spawned.stop()
        await rm(dir, { recursive: true, force: true })
      },
    }
  } catch (err) {
    admin?.disconnect()
    await server?.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

/** True when a TLS handshake verified by `ca` succeeds on `port` and the server answers PING (even -NOAUTH). */
function tlsPing(port: number, ca: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost' })
    let reply = ''
    const finish = (ok: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => finish(false), 500)
    socket.once('error', () => finish(false))
    socket.once('secureConnect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => {
      reply += chunk.toString()
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH'))
    })
  })
}
