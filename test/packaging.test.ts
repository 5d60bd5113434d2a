/**
 * The packaging, held against the code: no Docker engine or cluster runs here, so every port,
 * env name, config path, command line and probe path in the Dockerfile, docker-compose.yml and
 * deploy/kubernetes/ is checked against the CLI, the config loader and a running admin server.
 * Also: the npm package carries what the CLI needs, and the CLI runs from the packed tarball.
 */
import { execFile, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { startSwitchyard, type App } from '../src/app.js'
import { isLoopbackHost, loadConfigFile, parseConfigText } from '../src/config/load.js'
import { DEFAULTS, type ConfigFile } from '../src/config/schema.js'
import { startDemoBackend } from '../src/demo/backend.js'
import { eventually } from './helpers/eventually.js'
import {
  copyArgs,
  dockerfileStages,
  envReferences,
  execForm,
  inBuildContext,
  manifests,
  optionValue,
  readText,
  ROOT,
  yamlFile,
  type Stage,
} from './helpers/packaging.js'
import { freePort } from './helpers/redis.js'

const CLI = join(ROOT, 'dist/cli.js')
const PKG = JSON.parse(readText('package.json')) as { version: string; license: string; files: string[] }

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function run(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, timeout: opts.timeout ?? 15_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr })
    })
  })
}

const cli = (args: string[], env?: NodeJS.ProcessEnv) => run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 30_000 })

/** A config file checked by the real loader with `env`; fails the test with its problems. */
async function validConfig(path: string, env: NodeJS.ProcessEnv): Promise<ConfigFile> {
  const { config, problems } = await loadConfigFile(path, env)
  expect(problems, `${path}`).toEqual([])
  return config
}

const ports = (c: ConfigFile) => ({
  listen: c.listen?.port ?? DEFAULTS.listen.port,
  admin: c.admin?.port ?? DEFAULTS.admin.port,
})

/** The URL inside a `node -e "fetch('URL'...)"` healthcheck. */
function fetchedUrl(command: string[]): URL {
  expect(command[0]).toBe('node')
  expect(command[1]).toBe('-e')
  const m = /fetch\('([^']+)'/.exec(command[2] ?? '')
  expect(m, command.join(' ')).not.toBeNull()
  return new URL(m![1]!)
}

// ---------------------------------------------------------------------------------------------
// What the files say

const stages = dockerfileStages(readText('Dockerfile'))
const final = stages.at(-1) as Stage
const finalOps = (op: string) => final.instructions.filter((i) => i.op === op)
const entrypoint = execForm(finalOps('ENTRYPOINT').at(-1)!.rest)
const cmd = execForm(finalOps('CMD').at(-1)!.rest)
const workdir = finalOps('WORKDIR').at(-1)!.rest
const healthcheck = execForm(finalOps('HEALTHCHECK').at(-1)!.rest)
/** Repo paths the final image holds (COPY from the build context) and where they land. */
const imageCopies = finalOps('COPY')
  .map((i) => copyArgs(i.rest))
  .filter((c) => c.from === undefined)
const builtCopies = finalOps('COPY')
  .map((i) => copyArgs(i.rest))
  .filter((c) => c.from !== undefined)

/** A path inside the image (absolute, or relative to WORKDIR) → the repo file COPYed there, if any. */
function repoPathOf(imagePath: string): string | undefined {
  const abs = imagePath.startsWith('/') ? imagePath : `${workdir}/${imagePath}`
  for (const { sources, dest } of imageCopies) {
    const destAbs = (dest.startsWith('/') ? dest : `${workdir}/${dest.replace(/^\.\/?/, '')}`).replace(/\/$/, '')
    for (const source of sources) {
      // Docker: into a directory (`./`, or several sources) each source keeps its name;
      // `COPY config ./config` copies the directory's contents to dest.
      const target = dest.endsWith('/') || sources.length > 1 ? `${destAbs}/${basename(source)}` : destAbs
      if (abs === target) return source
      if (abs.startsWith(target + '/')) return join(source, abs.slice(target.length + 1))
    }
  }
  return undefined
}

const compose = yamlFile('docker-compose.yml') as { services: Record<string, any> }
const services = Object.entries(compose.services)
const COMMANDS = ['start', 'validate', 'demo', 'demo-backend', 'ctl']
/** Services that run the switchyard image: their command is a CLI command. */
const switchyardServices = services.filter(([, s]) => Array.isArray(s.command) && COMMANDS.includes(s.command[0]))
const proxyServices = switchyardServices.filter(([, s]) => s.command[0] === 'start')
const backendServices = switchyardServices.filter(([, s]) => s.command[0] === 'demo-backend')

/** A value for each `${VAR...}` in docker-compose.yml, as `SWITCHYARD_ADMIN_TOKEN=... docker compose up` gives them. */
const COMPOSE_VARS = Object.fromEntries(envReferences(readText('docker-compose.yml')).map((n) => [n, `test-value-of-${n}`]))
function composeEnv(service: any): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries((service.environment ?? {}) as Record<string, string>)) {
    out[k] = String(v).replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}/g, (_, n: string) => COMPOSE_VARS[n] ?? '')
  }
  return out
}

/** `"127.0.0.1:9901:9901"` → host ip (or undefined), host port, container port. */
function portMapping(spec: string): { ip: string | undefined; host: number; container: number } {
  const parts = String(spec).split(':')
  const container = Number(parts.at(-1))
  const host = Number(parts.at(-2))
  const ip = parts.length === 3 ? parts[0] : undefined
  return { ip, host, container }
}

const k8s = manifests('deploy/kubernetes')
const kinds = (kind: string) => k8s.filter((m) => m.doc.kind === kind).map((m) => m.doc)
const service = (name: string) => kinds('Service').find((s) => s.metadata.name === name)
const proxyDeployment = kinds('Deployment').find((d) => d.spec.template.spec.containers.some((c: any) => c.args?.[0] === 'start'))
const proxyContainer = proxyDeployment?.spec.template.spec.containers.find((c: any) => c.args?.[0] === 'start')

/** The env a container gets from its manifest; a secret's value stands in as a test value (one per Secret and key, long enough for a token). */
function k8sEnv(container: any): Record<string, string> {
  const secret = (ref: { name: string; key: string }) => `test-secret-${ref.name}-${ref.key}`
  return Object.fromEntries((container.env ?? []).map((e: any) => [e.name, e.value ?? secret(e.valueFrom?.secretKeyRef)]))
}

/** The file a container's `--config PATH` names, from the ConfigMap mounted at its directory. */
function k8sConfigText(deploymentDoc: any, container: any): string {
  const path = optionValue(container.args, 'config')!
  const mount = container.volumeMounts.find((m: any) => path.startsWith(m.mountPath.replace(/\/$/, '') + '/'))
  expect(mount, `a volume mounted above ${path}`).toBeDefined()
  const volume = deploymentDoc.spec.template.spec.volumes.find((v: any) => v.name === mount.name)
  const configMap = kinds('ConfigMap').find((c) => c.metadata.name === volume.configMap.name)
  const key = path.slice(mount.mountPath.replace(/\/$/, '').length + 1)
  expect(configMap?.data?.[key], `ConfigMap ${volume.configMap.name} key ${key}`).toBeTypeOf('string')
  return configMap.data[key] as string
}

/** A container port by number or name. */
function containerPort(container: any, port: number | string): number {
  if (typeof port === 'number') return port
  const p = container.ports.find((x: any) => x.name === port)
  expect(p, `port ${port}`).toBeDefined()
  return p.containerPort
}

/** Every command line the packaging runs the CLI with. */
const commandLines: { where: string; args: string[] }[] = [
  { where: 'Dockerfile CMD', args: cmd },
  ...switchyardServices.map(([name, s]) => ({ where: `compose ${name}`, args: s.command as string[] })),
  ...kinds('Deployment').flatMap((d) =>
    d.spec.template.spec.containers
      .filter((c: any) => c.image === proxyContainer.image)
      .map((c: any) => ({ where: `kubernetes ${d.metadata.name}`, args: c.args as string[] })),
  ),
]

// ---------------------------------------------------------------------------------------------
// One admin server, as the image runs it, to ask the probe paths

let app: App
beforeAll(async () => {
  const compose = parseConfigText(readText('config/compose.yaml'), { SWITCHYARD_ADMIN_TOKEN: 'probe-test', REDIS_PASSWORD: 'probe-test' }).config
  app = await startSwitchyard({
    ...compose,
    listen: { host: '127.0.0.1', port: 0 },
    admin: { ...compose.admin, host: '127.0.0.1', port: 0 },
    store: { type: 'memory' },
    upstreams: {},
    routes: [],
  })
})
afterAll(async () => {
  await app?.close(1000)
})

/** GET `path` on the running admin server without a token (probes carry none). */
async function probe(path: string): Promise<number> {
  const res = await fetch(new URL(path, app.adminUrl))
  await res.arrayBuffer()
  return res.status
}

// ---------------------------------------------------------------------------------------------

describe('Dockerfile', () => {
  it('builds in two stages on a Node LTS slim image and runs as the node user', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2)
    for (const s of stages) expect(s.image).toMatch(/^node:(22|24)(\.\d+)*-(bookworm|trixie)-slim$/)
    const build = stages[0]!
    expect(build.name).toBeDefined()
    expect(builtCopies.every((c) => c.from === build.name)).toBe(true)
    expect(builtCopies.map((c) => c.sources[0])).toEqual(expect.arrayContaining([`${workdir}/node_modules`, `${workdir}/dist`]))
    // the build stage builds with the package's own script and leaves only production dependencies
    const runs = build.instructions.filter((i) => i.op === 'RUN').map((i) => i.rest).join(' && ')
    expect(runs).toMatch(/npm ci\b/)
    expect(runs).toContain('npm run build')
    expect(runs).toMatch(/npm prune --omit=dev/)
    const user = finalOps('USER').at(-1)?.rest
    expect(user).toBe('node')
  })

  it('copies only what the build context lets in (.dockerignore), and everything the build and the CLI read', () => {
    const dockerignore = readText('.dockerignore')
    const sources = stages.flatMap((s) => s.instructions.filter((i) => i.op === 'COPY').map((i) => copyArgs(i.rest))).filter((c) => c.from === undefined).flatMap((c) => c.sources)
    for (const source of sources) {
      expect(existsSync(join(ROOT, source)), source).toBe(true)
      expect(inBuildContext(dockerignore, source), `${source} in the build context`).toBe(true)
    }
    for (const kept of ['node_modules', 'dist', '.git', 'test', 'bench']) expect(inBuildContext(dockerignore, kept), kept).toBe(false)
    // the build stage has what tsconfig.build.json compiles
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'src']) expect(sources).toContain(needed)
    // at run time: package.json (--version) and the configs the commands name
    expect(repoPathOf('package.json')).toBe('package.json')
    expect(repoPathOf('dist/cli.js')).toBeUndefined() // from the build stage, not the context
    expect(repoPathOf('config/demo.yaml')).toBe('config/demo.yaml')
    // the dashboard's files: served from ui/ next to dist/
    for (const file of ['ui/index.html', 'ui/app.js', 'ui/app.css']) expect(repoPathOf(`/app/${file}`)).toBe(file)
  })

  it('a bare `docker run IMAGE` runs the demo: ENTRYPOINT node dist/cli.js, CMD demo', async () => {
    expect(entrypoint).toEqual(['node', 'dist/cli.js'])
    expect(builtCopies.some((c) => c.dest.replace(/^\.\//, '') === 'dist')).toBe(true)
    expect(cmd).toEqual(['demo'])
    // The demo's proxy must be reachable through a published port: not on the container's loopback.
    const demo = await validConfig(join(ROOT, repoPathOf('config/demo.yaml')!), {})
    expect(isLoopbackHost(demo.listen?.host ?? DEFAULTS.listen.host)).toBe(false)
    // Its admin API has no token, so it stays on loopback (README: reached with docker exec ... switchyard ctl).
    expect(demo.admin?.token).toBeUndefined()
    expect(isLoopbackHost(demo.admin?.host ?? DEFAULTS.admin.host)).toBe(true)
    expect(readText('src/cli/demo.ts')).toContain("'../../config/demo.yaml'")
    // `switchyard` on PATH for docker exec
    expect(finalOps('RUN').map((i) => i.rest).join(' ')).toContain(`ln -s ${workdir}/dist/cli.js /usr/local/bin/switchyard`)
  })

  it('EXPOSEs the proxy and admin ports of the configs the image runs', async () => {
    const exposed = finalOps('EXPOSE').flatMap((i) => i.rest.split(/\s+/)).map((p) => Number(p.replace(/\/tcp$/, '')))
    const demo = ports(await validConfig(join(ROOT, 'config/demo.yaml'), {}))
    expect(exposed.sort()).toEqual([demo.listen, demo.admin].sort())
    for (const [name, s] of proxyServices) {
      const config = ports(await validConfig(join(ROOT, repoPathOf(optionValue(s.command, 'config')!)!), composeEnv(s)))
      expect([config.listen, config.admin].sort(), name).toEqual(exposed.sort())
    }
  })

  it('HEALTHCHECK asks /readyz on the admin port with node, and the check works', async () => {
    const url = fetchedUrl(healthcheck)
    expect(url.hostname).toBe('127.0.0.1')
    expect(url.pathname).toBe('/readyz')
    const demo = ports(await validConfig(join(ROOT, 'config/demo.yaml'), {}))
    expect(Number(url.port)).toBe(demo.admin)
    expect(await probe(url.pathname)).toBe(200)
    // The script itself, pointed at the running admin server, then at a closed port.
    const script = healthcheck[2]!
    const adminPort = new URL(app.adminUrl).port
    expect((await run(process.execPath, ['-e', script.replace(`:${url.port}/`, `:${adminPort}/`)])).code).toBe(0)
    const closed = await (async () => {
      const s = await startDemoBackend('x', 0)
      const p = (s.address() as { port: number }).port
      await new Promise((r) => s.close(r))
      return p
    })()
    expect((await run(process.execPath, ['-e', script.replace(`:${url.port}/`, `:${closed}/`)])).code).toBe(1)
  })
})

describe('docker-compose.yml', () => {
  it('builds one image once; every switchyard service runs that image', () => {
    const builders = services.filter(([, s]) => s.build !== undefined)
    expect(builders.map(([n]) => n)).toHaveLength(1)
    const [builderName, builder] = builders[0]!
    expect(builder.image).toMatch(/^[a-z0-9./-]+:[\w.-]+$/)
    expect(switchyardServices.map(([n]) => n)).toContain(builderName)
    expect(switchyardServices.length).toBeGreaterThanOrEqual(5)
    for (const [name, s] of switchyardServices) {
      expect(s.image, name).toBe(builder.image)
      // the others never look for it in a registry: it exists once the builder is built
      if (name !== builderName) expect(s.pull_policy, name).toBe('never')
    }
  })

  it('Redis has a healthcheck; two proxies wait for it and restart; every service restarts', () => {
    const [redisName, redis] = services.find(([, s]) => /^redis(:|$)/.test(s.image ?? ''))!
    expect(redis.healthcheck.test).toEqual(['CMD-SHELL', 'redis-cli ping | grep -q PONG'])
    expect(proxyServices.length).toBe(2)
    for (const [name, s] of proxyServices) expect(s.depends_on?.[redisName]?.condition, name).toBe('service_healthy')
    for (const [name, s] of services) expect(['always', 'unless-stopped', 'on-failure'], name).toContain(s.restart)
  })

  it("the proxies' config validates with the environment compose gives them, on the ports compose publishes", async () => {
    const hostPorts = new Set<number>()
    for (const [name, s] of proxyServices) {
      const file = repoPathOf(optionValue(s.command, 'config')!)
      expect(file, `${name}: its --config is in the image`).toBeDefined()
      const env = composeEnv(s)
      // every variable the config needs is set by the service; every variable set is read by someone
      const refs = envReferences(readText(file!))
      for (const ref of refs) expect(Object.keys(env), `${name} sets ${ref}`).toContain(ref)
      const config = await validConfig(join(ROOT, file!), env)
      expect((await cli(['validate', join(ROOT, file!)], env)).stdout).toBe('ok\n')
      const { listen, admin } = ports(config)
      const published = (s.ports as string[]).map(portMapping)
      for (const p of published) {
        expect(hostPorts.has(p.host), `host port ${p.host} used once`).toBe(false)
        hostPorts.add(p.host)
      }
      expect(published.find((p) => p.container === listen), `${name} publishes ${listen}`).toBeDefined()
      const adminPublished = published.filter((p) => p.container === admin)
      expect(adminPublished.length, `${name} publishes ${admin}`).toBe(1)
      // the admin API on this machine only; inside the container it must listen beyond loopback to be published at all
      expect(adminPublished[0]!.ip, `${name} admin port`).toBe('127.0.0.1')
      expect(isLoopbackHost(config.admin?.host ?? DEFAULTS.admin.host)).toBe(false)
      expect(config.admin?.token ?? config.admin?.tokens).toBeDefined()
      expect(isLoopbackHost(config.listen?.host ?? DEFAULTS.listen.host)).toBe(false)
      // the store is the redis service
      const store = new URL(config.store?.type === 'redis' ? config.store.url! : 'memory:')
      expect(compose.services[store.hostname], `store host ${store.hostname}`).toBeDefined()
      expect(Number(store.port || 6379)).toBe(6379)
      // every target is a demo API service answering as its upstream, on the port in its command
      for (const [upstream, spec] of Object.entries(config.upstreams)) {
        for (const t of spec.targets ?? []) {
          const u = new URL(t.url)
          const backend = compose.services[u.hostname]
          expect(backend?.command, `${t.url}`).toEqual(['demo-backend', upstream, u.port])
        }
      }
      const stop = Number(/^(\d+)s$/.exec(s.stop_grace_period)?.[1])
      expect(stop * 1000).toBeGreaterThan((config.shutdownDelayMs ?? DEFAULTS.shutdownDelayMs) + (config.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs))
    }
  })

  it("the demo APIs' healthchecks ask /healthz on their own port, which a demo API answers", async () => {
    expect(backendServices.length).toBe(3)
    const backend = await startDemoBackend('v1', 0)
    try {
      for (const [name, s] of backendServices) {
        const url = fetchedUrl(s.healthcheck.test.slice(1))
        expect(s.healthcheck.test[0]).toBe('CMD')
        expect(url.port, name).toBe(s.command[2])
        const res = await fetch(`http://127.0.0.1:${(backend.address() as { port: number }).port}${url.pathname}`)
        expect(await res.text()).toBe('ok')
      }
    } finally {
      await new Promise((r) => backend.close(r))
    }
  })
})

describe('deploy/kubernetes', () => {
  it('one namespace; the switchyard image and the Secret-fed admin token', () => {
    const namespaces = kinds('Namespace').map((n) => n.metadata.name)
    expect(namespaces).toHaveLength(1)
    for (const { file, doc } of k8s) if (doc.kind !== 'Namespace') expect(doc.metadata.namespace, `${file} ${doc.kind} ${doc.metadata.name}`).toBe(namespaces[0])
    expect(proxyContainer.image).toBe(compose.services[proxyServices[0]![0]].image)
    const token = proxyContainer.env.find((e: any) => e.name === 'SWITCHYARD_ADMIN_TOKEN')
    const { name, key } = token.valueFrom.secretKeyRef
    // the Secret is created by hand, as the namespace file and README say
    const create = `kubectl -n ${namespaces[0]} create secret generic ${name} --from-literal=${key}=`
    expect(readText('deploy/kubernetes/00-namespace.yaml')).toContain(create)
    expect(readText('README.md')).toContain(create)
    // every env name set is one the config refers to or the code reads
    const known = new Set([...envReferences(k8sConfigText(proxyDeployment, proxyContainer)), ...readText('src/cli/ctl.ts').match(/SWITCHYARD_[A-Z_]+/g)!])
    for (const e of proxyContainer.env) expect(known.has(e.name), e.name).toBe(true)
  })

  it("the ConfigMap's config validates with the env the Deployment sets, at the path its args name", async () => {
    const text = k8sConfigText(proxyDeployment, proxyContainer)
    const env = k8sEnv(proxyContainer)
    for (const ref of envReferences(text)) expect(Object.keys(env), `the Deployment sets ${ref}`).toContain(ref)
    const { problems } = parseConfigText(text, env)
    expect(problems).toEqual([])
    const dir = await mkdtemp(join(tmpdir(), 'switchyard-k8s-'))
    try {
      const file = join(dir, 'switchyard.yaml')
      await writeFile(file, text)
      expect((await cli(['validate', file], env)).stdout).toBe('ok\n')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('container ports, probes and the Service match the config; probes are answered without a token', async () => {
    const config = parseConfigText(k8sConfigText(proxyDeployment, proxyContainer), k8sEnv(proxyContainer)).config
    const { listen, admin } = ports(config)
    expect(proxyContainer.ports.map((p: any) => p.containerPort).sort()).toEqual([listen, admin].sort())
    // the kubelet probes the pod's address
    expect(isLoopbackHost(config.admin?.host ?? DEFAULTS.admin.host)).toBe(false)
    const readiness = proxyContainer.readinessProbe.httpGet
    const liveness = proxyContainer.livenessProbe.httpGet
    expect(readiness.path).toBe('/readyz')
    expect(liveness.path).toBe('/healthz')
    for (const p of [readiness, liveness]) {
      expect(containerPort(proxyContainer, p.port)).toBe(admin)
      expect(await probe(p.path), p.path).toBe(200)
    }
    const svc = service(proxyDeployment.metadata.name)
    expect(svc.spec.selector).toEqual(proxyDeployment.spec.selector.matchLabels)
    expect(svc.spec.ports.map((p: any) => containerPort(proxyContainer, p.targetPort))).toEqual([listen])
  })

  it('terminationGracePeriodSeconds covers the preStop sleep, shutdownDelayMs and shutdownTimeoutMs', () => {
    const config = parseConfigText(k8sConfigText(proxyDeployment, proxyContainer), k8sEnv(proxyContainer)).config
    const preStop = proxyContainer.lifecycle.preStop.exec.command as string[]
    expect(preStop[0]).toBe('sleep')
    const preStopMs = Number(preStop[1]) * 1000
    const delay = config.shutdownDelayMs ?? DEFAULTS.shutdownDelayMs
    const timeout = config.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs
    expect(delay).toBeGreaterThan(0)
    // README: the delay outlasts the readiness probe's period × failure threshold
    const r = proxyContainer.readinessProbe
    expect(delay).toBeGreaterThan((r.periodSeconds ?? 10) * (r.failureThreshold ?? 3) * 1000)
    expect(proxyDeployment.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(preStopMs + delay + timeout)
  })

  it('Redis and the demo APIs are where the config looks for them', () => {
    const config = parseConfigText(k8sConfigText(proxyDeployment, proxyContainer), k8sEnv(proxyContainer)).config
    const namespace = proxyDeployment.metadata.namespace
    expect(config.store?.type).toBe('redis')
    const store = new URL(config.store?.type === 'redis' ? config.store.url! : '')
    const redisSvc = service(store.hostname)
    expect(redisSvc, `Service ${store.hostname}`).toBeDefined()
    expect(redisSvc.spec.ports.map((p: any) => p.port)).toContain(Number(store.port || 6379))
    const redis = kinds('Deployment').find((d) => JSON.stringify(d.spec.selector.matchLabels) === JSON.stringify(redisSvc.spec.selector))
    expect(redis.spec.template.spec.containers[0].image).toMatch(/^redis:/)
    for (const [upstream, spec] of Object.entries(config.upstreams)) {
      const dns = spec.discovery?.dns
      expect(dns, upstream).toBeDefined()
      const m = new RegExp(`^([a-z0-9-]+)\\.${namespace}\\.svc\\.cluster\\.local$`).exec(dns!.name)
      expect(m, dns!.name).not.toBeNull()
      const svc = service(m![1]!)
      expect(svc.spec.clusterIP).toBe('None') // headless: the name resolves to the pods
      const backend = kinds('Deployment').find((d) => JSON.stringify(d.spec.selector.matchLabels) === JSON.stringify(svc.spec.selector))
      const c = backend.spec.template.spec.containers[0]
      expect(c.image).toBe(proxyContainer.image)
      expect(c.args).toEqual(['demo-backend', upstream, String(dns!.port)])
      expect(containerPort(c, svc.spec.ports[0].targetPort)).toBe(dns!.port)
      expect(c.readinessProbe.httpGet.path).toBe(spec.healthCheck?.path)
    }
  })
})

// ---------------------------------------------------------------------------------------------
// Redis behind a password and the network: the deploy files hold the fleet's state for the proxies alone

const redisService = services.find(([, s]) => /^redis(:|$)/.test(s.image ?? ''))!
const redisDeployment = kinds('Deployment').find((d) => /^redis:/.test(d.spec.template.spec.containers[0].image))
const redisContainer = redisDeployment?.spec.template.spec.containers[0]

/** `$(NAME)` in a container's args, expanded from its env as the kubelet does. */
function kubeletArgs(container: any, env: Record<string, string>): string[] {
  return (container.args as string[]).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n: string) => env[n] ?? m))
}

/** The `--requirepass` a redis-server command line sets, or undefined. */
function requirepassOf(args: string[]): string | undefined {
  const i = args.indexOf('--requirepass')
  return i < 0 ? undefined : args[i + 1]
}

interface PodRef {
  namespace: string
  labels: Record<string, string>
}

/** A label selector's matchLabels against `labels` (matchExpressions are not used by the manifests, and refused here). */
function selects(selector: any, labels: Record<string, string>): boolean {
  expect(selector?.matchExpressions, 'matchExpressions').toBeUndefined()
  return Object.entries((selector?.matchLabels ?? {}) as Record<string, string>).every(([k, v]) => labels[k] === v)
}

/**
 * Whether the NetworkPolicies let `from` open a TCP connection to `port` of a pod of
 * `deployment`: the Kubernetes rules (an isolated pod takes only what some policy selecting it
 * allows; a rule's peers and ports are ORed, a peer's namespace and pod selectors ANDed; a
 * namespace carries its `kubernetes.io/metadata.name` label). Named ports resolve on the target's containers.
 */
function ingressAllowed(from: PodRef, deployment: any, port: number): boolean {
  const to: PodRef = { namespace: deployment.metadata.namespace, labels: deployment.spec.template.metadata.labels }
  const policies = kinds('NetworkPolicy').filter(
    (p) => p.metadata.namespace === to.namespace && selects(p.spec.podSelector, to.labels) && (p.spec.policyTypes ?? ['Ingress']).includes('Ingress'),
  )
  if (policies.length === 0) return true
  const namedPort = (name: string) => deployment.spec.template.spec.containers.flatMap((c: any) => c.ports ?? []).find((p: any) => p.name === name)?.containerPort
  const peerMatches = (policy: any, peer: any) => {
    if (peer.ipBlock !== undefined) return false // addresses outside the cluster's pods
    const namespaceOk = peer.namespaceSelector === undefined ? from.namespace === policy.metadata.namespace : selects(peer.namespaceSelector, { 'kubernetes.io/metadata.name': from.namespace })
    return namespaceOk && (peer.podSelector === undefined || selects(peer.podSelector, from.labels))
  }
  const portMatches = (p: any) => (p.protocol ?? 'TCP') === 'TCP' && (p.port === undefined || (typeof p.port === 'number' ? p.port : namedPort(p.port)) === port)
  return policies.some((policy) =>
    ((policy.spec.ingress ?? []) as any[]).some(
      (rule) => (rule.from === undefined || rule.from.length === 0 || rule.from.some((peer: any) => peerMatches(policy, peer))) && (rule.ports === undefined || rule.ports.length === 0 || rule.ports.some(portMatches)),
    ),
  )
}

const podOf = (d: any): PodRef => ({ namespace: d.metadata.namespace, labels: d.spec.template.metadata.labels })

/**
 * Runs `argv` (a packaged Redis command) with `env`, on a free loopback port: stand-ins for the
 * image's entrypoint and for redis-cli only add `--port`/`-p`; the rest (the shell, the quoting,
 * `--requirepass`) runs as written. Resolves once redis-server answers.
 */
async function packagedRedis(argv: string[], env: Record<string, string>): Promise<{ port: number; sh: (script: string, env: Record<string, string>) => Promise<Run> }> {
  const port = await freePort()
  const bin = await mkdtemp(join(tmpdir(), 'switchyard-redis-shims-'))
  const realCli = (await run('sh', ['-c', 'command -v redis-cli'])).stdout.trim()
  expect(realCli, 'redis-cli on PATH').not.toBe('')
  // the redis image's entrypoint: options alone mean redis-server
  await writeFile(join(bin, 'docker-entrypoint.sh'), `#!/bin/sh\ncase "$1" in -*) set -- redis-server "$@";; esac\nexec "$@" --port ${port} --bind 127.0.0.1\n`, { mode: 0o755 })
  await writeFile(join(bin, 'redis-cli'), `#!/bin/sh\nexec ${realCli} -p ${port} "$@"\n`, { mode: 0o755 })
  const path = `${bin}:${process.env['PATH']}`
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...env, PATH: path }, stdio: 'ignore' })
  onTestFinished(async () => {
    if (child.exitCode === null) await new Promise((r) => child.once('exit', r).kill('SIGKILL'))
    await rm(bin, { recursive: true, force: true })
  })
  const sh = (script: string, extra: Record<string, string>) => run('sh', ['-c', script], { env: { PATH: path, ...extra } })
  // up once it answers at all (NOAUTH is an answer)
  await eventually(async () => expect((await sh('redis-cli ping', {})).stdout).toMatch(/NOAUTH|PONG/), { timeoutMs: 10_000 })
  return { port, sh }
}

describe('the store: a password and the network', () => {
  it('compose: Redis requires the password from REDIS_PASSWORD, publishes nothing, and its healthcheck authenticates', async () => {
    const [, redis] = redisService
    expect(redis.ports).toBeUndefined()
    const env = composeEnv(redis)
    expect(env['REDIS_PASSWORD']).toBe(COMPOSE_VARS['REDIS_PASSWORD'])
    expect(env['REDISCLI_AUTH']).toBe(env['REDIS_PASSWORD'])
    // the password is read when the container starts ($$ is compose's escape for $), not written in the file
    expect(redis.command[0]).toBe('sh')
    expect(redis.command.join(' ')).toContain('--requirepass "$$REDIS_PASSWORD"')
    const argv = (redis.command as string[]).map((a) => a.replaceAll('$$', '$'))
    const r = await packagedRedis(argv, { REDIS_PASSWORD: env['REDIS_PASSWORD']! })
    expect((await r.sh('redis-cli ping', {})).stdout).toContain('NOAUTH')
    const check = redis.healthcheck.test[1] as string
    expect(redis.healthcheck.test[0]).toBe('CMD-SHELL')
    expect((await r.sh(check, { REDISCLI_AUTH: env['REDISCLI_AUTH']! })).code).toBe(0)
    expect((await r.sh(check, {})).code, 'unauthenticated: unhealthy').toBe(1)
    expect((await r.sh(check, { REDISCLI_AUTH: 'wrong' })).code).toBe(1)
  }, 30_000)

  it("compose: the proxies' store.url carries the same password, from the environment; only they share a network with Redis", async () => {
    const [redisName, redis] = redisService
    expect(readText('config/compose.yaml')).toContain('redis://:${REDIS_PASSWORD}@')
    for (const [name, s] of proxyServices) {
      const config = await validConfig(join(ROOT, repoPathOf(optionValue(s.command, 'config')!)!), composeEnv(s))
      const url = new URL(config.store?.type === 'redis' ? config.store.url! : 'memory:')
      expect(url.hostname, name).toBe(redisName)
      expect(decodeURIComponent(url.password), name).toBe(composeEnv(redis)['REDIS_PASSWORD'])
    }
    const networksOf = (s: any): string[] => (Array.isArray(s.networks) ? s.networks : Object.keys(s.networks ?? { default: null }))
    const redisNetworks = networksOf(redis)
    expect(redisNetworks.length).toBeGreaterThan(0)
    for (const n of redisNetworks) {
      expect((compose as any).networks?.[n]?.internal, `network ${n} is internal`).toBe(true)
      const members = services.filter(([, s]) => networksOf(s).includes(n)).map(([name]) => name)
      expect(members.sort(), `network ${n}`).toEqual([redisName, ...proxyServices.map(([name]) => name)].sort())
    }
    // the proxies still reach the demo APIs
    for (const [name, s] of backendServices) expect(networksOf(s).some((n) => proxyServices.every(([, p]) => networksOf(p).includes(n))), name).toBe(true)
  })

  it('kubernetes: Redis requires the password from a Secret, which the proxies read into store.url; the probe authenticates', async () => {
    expect(redisContainer, 'a redis Deployment').toBeDefined()
    const refOf = (c: any, name: string) => c.env?.find((e: any) => e.name === name)?.valueFrom?.secretKeyRef
    const ref = refOf(redisContainer, 'REDIS_PASSWORD')
    expect(ref, 'REDIS_PASSWORD from a Secret').toMatchObject({ name: expect.any(String), key: expect.any(String) })
    expect(refOf(redisContainer, 'REDISCLI_AUTH')).toEqual(ref)
    expect(refOf(proxyContainer, 'REDIS_PASSWORD')).toEqual(ref)
    expect(readText('deploy/kubernetes/00-namespace.yaml')).toContain(`kubectl -n ${redisDeployment.metadata.namespace} create secret generic ${ref.name} --from-literal=${ref.key}=`)
    // the manifest names the variable; the kubelet puts the value in
    expect(redisContainer.args).toContain('$(REDIS_PASSWORD)')
    const redisEnv = k8sEnv(redisContainer)
    const args = kubeletArgs(redisContainer, redisEnv)
    expect(requirepassOf(args)).toBe(redisEnv['REDIS_PASSWORD'])
    const config = parseConfigText(k8sConfigText(proxyDeployment, proxyContainer), k8sEnv(proxyContainer)).config
    const url = new URL(config.store?.type === 'redis' ? config.store.url! : 'memory:')
    expect(decodeURIComponent(url.password)).toBe(redisEnv['REDIS_PASSWORD'])
    expect(k8sConfigText(proxyDeployment, proxyContainer)).toContain('redis://:${REDIS_PASSWORD}@')
    // run it: the image's entrypoint gets the args
    const r = await packagedRedis(['docker-entrypoint.sh', ...args], {})
    expect((await r.sh('redis-cli ping', {})).stdout).toContain('NOAUTH')
    const probe = redisContainer.readinessProbe.exec.command as string[]
    expect(probe.slice(0, 2)).toEqual(['sh', '-c'])
    expect((await r.sh(probe[2]!, { REDISCLI_AUTH: redisEnv['REDISCLI_AUTH']! })).code).toBe(0)
    expect((await r.sh(probe[2]!, {})).code).toBe(1)
  }, 30_000)

  it('kubernetes NetworkPolicies: only switchyard reaches Redis, only the load balancer the proxy port, nobody the admin port', () => {
    const namespace = proxyDeployment.metadata.namespace
    const config = parseConfigText(k8sConfigText(proxyDeployment, proxyContainer), k8sEnv(proxyContainer)).config
    const { listen, admin } = ports(config)
    const redisPort = containerPort(redisContainer, 'redis')
    const balancer: PodRef = { namespace: 'ingress-nginx', labels: { 'app.kubernetes.io/name': 'ingress-nginx' } }
    const backends = kinds('Deployment').filter((d) => d !== proxyDeployment && d !== redisDeployment)
    expect(backends.length).toBeGreaterThan(0)
    const strangers: PodRef[] = [
      ...backends.map(podOf),
      podOf(redisDeployment),
      { namespace, labels: { app: 'something-new' } },
      { namespace: 'default', labels: { app: 'switchyard' } }, // the same labels in another namespace
      { namespace: 'ingress-nginx', labels: { app: 'other' } },
    ]
    // Redis: the proxies only
    expect(ingressAllowed(podOf(proxyDeployment), redisDeployment, redisPort)).toBe(true)
    for (const p of [...strangers, balancer]) expect(ingressAllowed(p, redisDeployment, redisPort), JSON.stringify(p)).toBe(false)
    // the proxy port: the load balancer only; the admin port: no pod at all (the kubelet's probes come from the node)
    expect(ingressAllowed(balancer, proxyDeployment, listen)).toBe(true)
    for (const p of [...strangers, podOf(proxyDeployment)]) expect(ingressAllowed(p, proxyDeployment, listen), JSON.stringify(p)).toBe(false)
    for (const p of [...strangers, balancer, podOf(proxyDeployment)]) expect(ingressAllowed(p, proxyDeployment, admin), JSON.stringify(p)).toBe(false)
    // the demo APIs: from the proxies, on their port, and from nobody else
    for (const d of backends) {
      const port = d.spec.template.spec.containers[0].ports[0].containerPort
      expect(ingressAllowed(podOf(proxyDeployment), d, port), d.metadata.name).toBe(true)
      for (const p of [balancer, podOf(redisDeployment), { namespace, labels: { app: 'something-new' } }]) expect(ingressAllowed(p, d, port), d.metadata.name).toBe(false)
    }
    // the probes' port is the admin port, and nothing else in the manifests opens it
    for (const probe of [proxyContainer.readinessProbe.httpGet, proxyContainer.livenessProbe.httpGet]) expect(containerPort(proxyContainer, probe.port)).toBe(admin)
    expect(readText('deploy/kubernetes/40-network-policies.yaml').replace(/\s*\n#\s*/g, ' ')).toContain('traffic from the node a pod runs on is always allowed')
  })
})

describe('command lines', () => {
  it('every command line in the packaging is a CLI command with options it knows', async () => {
    expect(commandLines.length).toBeGreaterThanOrEqual(8)
    // Parsing is strict and comes before --help: an unknown command or option fails here.
    // Positionals do not change that answer, so one run per command and set of options.
    const shape = (args: string[]) => [args[0], ...args.filter((a) => a.startsWith('-'))].join(' ')
    const distinct = [...new Map(commandLines.map((c) => [shape(c.args), c.args])).values()]
    const answers = new Map(await Promise.all(distinct.map(async (args) => [shape(args), await cli([...args, '--help'])] as const)))
    for (const { where, args } of commandLines) {
      const r = answers.get(shape(args))!
      expect(r.code, `${where}: ${args.join(' ')}\n${r.stderr}`).toBe(0)
      expect(r.stdout, where).toMatch(new RegExp(`^usage: switchyard ${args[0]}\\b`))
      if (args[0] === 'demo-backend') expect(args.slice(1), where).toEqual([expect.stringMatching(/^v\d+$/), expect.stringMatching(/^\d{1,5}$/)])
    }
  })
})

describe('npm package', () => {
  it('LICENSE is the MIT licence package.json names', () => {
    expect(PKG.license).toBe('MIT')
    const license = readText('LICENSE')
    expect(license).toMatch(/^MIT License\n/)
    expect(license).toMatch(/Copyright \(c\) \d{4} the switchyard authors/)
  })

  it('npm pack holds dist/cli.js, README.md, LICENSE and the demo config, and no tests or sources', async () => {
    const r = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { timeout: 30_000 })
    expect(r.code, r.stderr).toBe(0)
    const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path)
    expect(files).toEqual(expect.arrayContaining(['dist/cli.js', 'README.md', 'LICENSE', 'package.json', 'config/demo.yaml', 'ui/index.html', 'ui/app.js', 'ui/app.css']))
    expect(files.filter((f) => /^(src|test|bench|deploy)\//.test(f) || f.endsWith('.map'))).toEqual([])
  })

  it('the CLI runs from the packed tarball installed with npm install -g', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'switchyard-pack-'))
    try {
      const packed = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { timeout: 30_000 })
      expect(packed.code, packed.stderr).toBe(0)
      const tarball = (await readdir(dir)).find((f) => /^switchyard-.*\.tgz$/.test(f))
      expect(tarball).toBe(`switchyard-${PKG.version}.tgz`)
      const prefix = join(dir, 'prefix')
      await mkdir(prefix)
      const installed = await run('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', `./${tarball}`], { cwd: dir, timeout: 100_000 })
      expect(installed.code, installed.stderr).toBe(0)
      const bin = join(prefix, 'bin/switchyard')
      const version = await run(bin, ['--version'])
      expect(version).toMatchObject({ code: 0, stdout: `${PKG.version}\n` })
      // the demo's config travels with it (switchyard demo reads it next to dist/)
      const demoConfig = join(prefix, 'lib/node_modules/switchyard/config/demo.yaml')
      expect(readFileSync(demoConfig, 'utf8')).toBe(readText('config/demo.yaml'))
      expect(await run(bin, ['validate', demoConfig])).toMatchObject({ code: 0, stdout: 'ok\n' })
      // and the dashboard's page, with uPlot installed as a dependency
      expect(readFileSync(join(prefix, 'lib/node_modules/switchyard/ui/app.js'), 'utf8')).toBe(readText('ui/app.js'))
      expect(readFileSync(join(prefix, 'lib/node_modules/switchyard/node_modules/uplot/dist/uPlot.iife.min.js'), 'utf8').length).toBeGreaterThan(0)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }, 120_000)
})
