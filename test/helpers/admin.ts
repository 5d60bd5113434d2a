/**
 * Admin API test helpers: a small fetch-based client and `startApp`, which runs a whole
 * switchyard instance (proxy + control plane + admin) on 127.0.0.1 port 0 and closes it after
 * the test (or, when started outside a test, after the file).
 */
import { afterAll, onTestFinished } from 'vitest'
import { startSwitchyard, type App, type AppOptions } from '../../src/app.js'
import type { ConfigFile } from '../../src/config/schema.js'
import { startBackend, type Backend } from './backend.js'

export interface Res<T = any> {
  status: number
  headers: Headers
  body: T
}

export interface RequestOptions {
  headers?: Record<string, string>
  /** sent as is (a string or bytes), instead of JSON-encoding `json` */
  raw?: string | Uint8Array<ArrayBuffer>
}

export interface AdminClient {
  request<T = any>(method: string, path: string, json?: unknown, opts?: RequestOptions): Promise<Res<T>>
  get<T = any>(path: string, opts?: RequestOptions): Promise<Res<T>>
  put<T = any>(path: string, json?: unknown, opts?: RequestOptions): Promise<Res<T>>
  post<T = any>(path: string, json?: unknown, opts?: RequestOptions): Promise<Res<T>>
  patch<T = any>(path: string, json?: unknown, opts?: RequestOptions): Promise<Res<T>>
  del<T = any>(path: string, opts?: RequestOptions): Promise<Res<T>>
}

/** A client for `baseUrl`; `token` is sent as `Authorization: Bearer` unless a request sets its own. */
export function adminClient(baseUrl: string, token?: string): AdminClient {
  const request = async <T>(method: string, path: string, json?: unknown, opts: RequestOptions = {}): Promise<Res<T>> => {
    const headers: Record<string, string> = {}
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`
    let body: string | Uint8Array<ArrayBuffer> | undefined = opts.raw
    if (body === undefined && json !== undefined) {
      body = JSON.stringify(json)
      headers['content-type'] = 'application/json'
    }
    const res = await fetch(baseUrl + path, { method, headers: { ...headers, ...opts.headers }, body })
    const text = await res.text()
    let parsed: unknown = text
    try {
      parsed = text === '' ? undefined : JSON.parse(text)
    } catch {
      // not JSON: keep the text, so a test failure shows what came back
    }
    return { status: res.status, headers: res.headers, body: parsed as T }
  }
  return {
    request,
    get: (path, opts) => request('GET', path, undefined, opts),
    put: (path, json, opts) => request('PUT', path, json, opts),
    post: (path, json, opts) => request('POST', path, json, opts),
    patch: (path, json, opts) => request('PATCH', path, json, opts),
    del: (path, opts) => request('DELETE', path, undefined, opts),
  }
}

export interface TestApp {
  app: App
  admin: AdminClient
  /** GET (or `init`) through the proxy; resolves with status, the `x-backend` that answered, and the body */
  proxy(path: string, init?: RequestInit): Promise<{ status: number; backend: string | null; body: string }>
  close(): Promise<void>
}

const live = new Set<() => Promise<void>>()
afterAll(async () => {
  await Promise.all([...live].map((close) => close()))
})

/** Closes `close` after the current test, or after the file when called outside a test. */
function cleanup(close: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined
  const once = () => (done ??= close().finally(() => live.delete(once)))
  live.add(once)
  try {
    onTestFinished(once)
  } catch {
    // not inside a test (beforeAll): the afterAll above closes it
  }
  return once
}

/** A config without addresses: startApp puts proxy and admin on 127.0.0.1:0 (listen.limits, trustedProxies and tls pass). */
export type TestConfig = Omit<ConfigFile, 'listen' | 'admin'> & { admin?: ConfigFile['admin']; listen?: Omit<NonNullable<ConfigFile['listen']>, 'host' | 'port'> }

/** Starts an instance on 127.0.0.1:0 (proxy and admin); `token` is what the client sends. */
export async function startApp(config: TestConfig, opts: AppOptions & { token?: string } = {}): Promise<TestApp> {
  const { token, ...appOpts } = opts
  const app = await startSwitchyard(
    {
      ...config,
      listen: { ...config.listen, host: '127.0.0.1', port: 0 },
      admin: { ...config.admin, host: '127.0.0.1', port: 0 },
      shutdownTimeoutMs: 1_000,
    },
    // An empty store is a new one here: no fleet to wait for, unless a test says so.
    { seedWaitMs: 0, ...appOpts },
  )
  const close = cleanup(async () => {
    await app.close(1_000)
  })
  return {
    app,
    admin: adminClient(app.adminUrl, token),
    async proxy(path, init) {
      const res = await fetch(app.proxyUrl + path, init)
      return { status: res.status, backend: res.headers.get('x-backend'), body: await res.text() }
    },
    close,
  }
}

/** A real backend answering `x-backend: <name>`, closed like `startApp`. */
export async function backend(name: string): Promise<Backend> {
  const b = await startBackend(name)
  cleanup(() => b.close())
  return b
}

/** The usual two-version setup: upstreams v1 and v2 with one target each, route `api` split 100/0. */
export function twoVersions(v1: Backend, v2: Backend, extra: Partial<TestConfig> = {}): TestConfig {
  return {
    upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100, v2: 0 } }],
    ...extra,
  }
}
