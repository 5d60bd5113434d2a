/**
 * The dashboard: `GET /` serves a static page (ui/ in the package, uPlot from its npm package,
 * no CDN, no build step), open without a token: the page asks for the token and sends it with
 * every data call. `GET /api/dashboard/stream` (token required) is one Server-Sent Events
 * stream: a `snapshot` event every 2 s with what the page shows, the fleet's figures included.
 * The page reads it with fetch() (EventSource cannot send an Authorization header).
 */
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { rolloutsOf } from '../../rollout/mutations.js'
import { redact, redactEvent } from '../../rollout/plan.js'
import { PAGE_CSP } from './browser.js'
import type { AdminDeps } from './deps.js'

const UI_DIR = fileURLToPath(new URL('../../../ui/', import.meta.url))
const UPLOT_DIR = join(dirname(createRequire(import.meta.url).resolve('uplot/package.json')), 'dist')

/** The files the page loads, by URL path: name on disk and content type. */
const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: join(UI_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/ui/app.js': { file: join(UI_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/ui/app.css': { file: join(UI_DIR, 'app.css'), type: 'text/css; charset=utf-8' },
  '/ui/uplot.js': { file: join(UPLOT_DIR, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/ui/uplot.css': { file: join(UPLOT_DIR, 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
}

/** How often the stream sends a snapshot, and what the charts span. */
export const DASHBOARD_PERIOD_MS = 2_000
const CHART_WINDOW_MS = 5 * 60_000
const CHART_STEP_MS = 5_000

/** Everything the page shows, from this instance's applied state and the fleet's figures. */
async function snapshot(deps: AdminDeps): Promise<unknown> {
  const { control, dataplane } = deps
  const state = control.follower.effective
  const [instances, events, series] = await Promise.all([
    control.fleet.instances().catch(() => null),
    control.store.events(10).then((events) => events.map(redactEvent), () => null),
    control.telemetry.series(CHART_WINDOW_MS, CHART_STEP_MS).catch(() => null),
  ])
  // In-flight per target, summed over the fleet (each instance's last heartbeat; this one live).
  const fleetInflight = new Map<string, number>()
  for (const i of instances ?? []) {
    if (i.id === control.instanceId) continue
    for (const [key, n] of Object.entries(i.inflight)) fleetInflight.set(key, (fleetInflight.get(key) ?? 0) + n)
  }
  const upstreams = Object.entries(state.upstreams).map(([name, u]) => ({
    name,
    targets: u.targets.map((t) => {
      const rt = dataplane.resources.targets.get(`${name}/${t.id}`)
      const health = rt?.health() ?? { healthy: false, reason: 'not applied on this instance yet' }
      return {
        id: t.id,
        url: t.url,
        state: t.state,
        healthy: health.healthy,
        reason: health.reason ?? null,
        ejected: rt?.ejected ?? false,
        inflight: (rt?.inflight ?? 0) + (fleetInflight.get(`${name}/${t.id}`) ?? 0),
      }
    }),
  }))
  return {
    at: Date.now(),
    revision: control.state.revision,
    storeConnected: control.store.connected,
    instance: control.instanceId,
    routes: control.state.routes.map((r) => ({ name: r.name, match: r.match ?? {}, split: r.split, rules: (r.rules ?? []).length, sticky: r.sticky ?? null })),
    upstreams,
    instances,
    rollouts: Object.values(rolloutsOf(control.state))
      .sort((a, b) => b.createdAt - a.createdAt)
      .slice(0, 10)
      .map(redact),
    flags: control.state.flags,
    events,
    series,
  }
}

export const dashboardPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  // Streams never end by themselves: closing the admin server ends them first, or it would wait forever.
  const streams = new Set<() => void>()
  app.addHook('preClose', async () => {
    for (const end of streams) end()
  })
  for (const [path, asset] of Object.entries(ASSETS)) {
    app.get(path, { config: { public: true }, schema: { hide: true } }, async (_req, reply) => {
      // Read on each request: a few KB, at human rates; an edited file shows on reload.
      const body = await readFile(asset.file)
      // The page loads only its own files and sets no inline script or style: PAGE_CSP holds.
      return reply.type(asset.type).header('cache-control', 'no-cache').header('content-security-policy', PAGE_CSP).send(body)
    })
  }

  app.get(
    '/api/dashboard/stream',
    {
      schema: {
        tags: ['dashboard'],
        operationId: 'streamDashboard',
        summary: 'Server-Sent Events: a `snapshot` event every 2 s with routes, upstreams and targets, instances, rollouts, flags, the last audit events and the fleet\'s per-upstream rate, error rate and p99 over the last 5 minutes',
        response: { 200: Type.String({ description: 'text/event-stream' }) },
      },
    },
    async (req, reply) => {
      reply.hijack()
      const res = reply.raw
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no', 'x-content-type-options': 'nosniff' })
      let open = true
      let timer: NodeJS.Timeout | undefined
      const send = async () => {
        try {
          const data = JSON.stringify(await snapshot(deps))
          if (open) res.write(`event: snapshot\ndata: ${data}\n\n`)
        } catch (err) {
          if (open) res.write(`event: error\ndata: ${JSON.stringify({ message: (err as Error).message })}\n\n`)
        }
        if (open) timer = setTimeout(() => void send(), DASHBOARD_PERIOD_MS)
      }
      const end = () => {
        open = false
        if (timer) clearTimeout(timer)
        streams.delete(end)
        res.end()
      }
      streams.add(end)
      req.raw.on('close', end)
      await send()
    },
  )
}
