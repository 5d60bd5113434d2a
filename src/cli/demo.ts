/**
 * `switchyard demo` (`npm start`): two demo API versions (v1 on :3001 and :3002, v2 on :3003)
 * and the proxy on :8080 with config/demo.yaml, admin on 127.0.0.1:9901. Ctrl-C stops it all.
 */
import type { Server } from 'node:http'
import { fileURLToPath } from 'node:url'
import { startSwitchyard } from '../app.js'
import { loadConfigFile } from '../config/load.js'
import { startDemoBackend } from '../demo/backend.js'
import { formatProblem } from '../errors.js'
import { parseCommand, usageError, type CommandSpec } from './args.js'

const DEMO_CONFIG = fileURLToPath(new URL('../../config/demo.yaml', import.meta.url))

const DEMO: CommandSpec = {
  name: 'demo',
  usage: 'usage: switchyard demo\n  two demo API versions and the proxy on :8080 (admin on 127.0.0.1:9901); Ctrl-C stops it all',
  options: {},
}

const BACKEND: CommandSpec = {
  name: 'demo-backend',
  usage: 'usage: switchyard demo-backend VERSION PORT\n  one demo API instance on 0.0.0.0:PORT answering as VERSION (for docker-compose)',
  options: {},
}

export async function demo(args: string[]): Promise<number> {
  const parsed = parseCommand(args, DEMO)
  if (typeof parsed === 'number') return parsed
  if (parsed.positionals.length > 0) return usageError(DEMO, `unexpected argument ${JSON.stringify(parsed.positionals[0])}`)
  const { config, problems } = await loadConfigFile(DEMO_CONFIG)
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(formatProblem(p) + '\n')
    return 1
  }
  const backends: Server[] = []
  const closeBackends = () => Promise.all(backends.map((s) => new Promise((r) => s.close(r))))
  let app
  try {
    backends.push(await startDemoBackend('v1', 3001), await startDemoBackend('v1', 3002), await startDemoBackend('v2', 3003))
    app = await startSwitchyard(config)
  } catch (err) {
    process.stderr.write(`switchyard demo: cannot start: ${(err as Error).message}\n(ports 3001-3003, 8080 and 9901 must be free)\n`)
    for (const s of backends) s.closeAllConnections()
    await closeBackends()
    return 1
  }
  const proxy = app.proxyUrl.replace('127.0.0.1', 'localhost')
  process.stdout.write(
    [
      'switchyard demo is running',
      `  proxy   ${proxy}          (route "api": v1 90 % / v2 10 %, sticky by x-user-id)`,
      `  admin   ${app.adminUrl}     (GET /api/state, PUT /api/routes/api/split ...)`,
      '  demo APIs: v1 on :3001 and :3002, v2 on :3003',
      '',
      'try:',
      `  curl -s ${proxy}/hello`,
      `  curl -s -H 'x-api-version: 2' ${proxy}/hello`,
      `  curl -s -H 'x-user-id: alice' ${proxy}/hello    # same user, same version, every time`,
      `  curl -s -X PUT -H 'content-type: application/json' -d '{"v1":50,"v2":50}' ${app.adminUrl}/api/routes/api/split`,
      '',
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  )
  return new Promise<number>((resolve) => {
    const stop = () => {
      void app.close(5_000).then(async () => {
        for (const s of backends) s.closeAllConnections()
        await closeBackends()
        resolve(0)
      })
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}

/** `switchyard demo-backend VERSION PORT`: one demo API instance on 0.0.0.0 (docker-compose). */
export async function demoBackend(args: string[]): Promise<number> {
  const parsed = parseCommand(args, BACKEND)
  if (typeof parsed === 'number') return parsed
  const [version, portText, ...extra] = parsed.positionals
  const port = Number(portText)
  if (!version || extra.length > 0) return usageError(BACKEND, 'expected VERSION and PORT')
  if (!Number.isInteger(port) || port <= 0 || port > 65535) return usageError(BACKEND, `PORT must be a number from 1 to 65535, not ${JSON.stringify(portText)}`)
  const server = await startDemoBackend(version, port, '0.0.0.0')
  process.stdout.write(`demo API ${version} on :${port}\n`)
  return new Promise<number>((resolve) => {
    const stop = () => server.close(() => resolve(0))
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
