// The switchyard dashboard: one fetch()-read Server-Sent Events stream (the token goes in the
// Authorization header, which EventSource cannot send), rendered with plain DOM calls and
// uPlot charts. No build step: this file is served as it is.
const TOKEN_KEY = 'switchyard-admin-token'
const COLORS = ['#0969da', '#8250df', '#1a7f37', '#bf3989', '#9a6700', '#cf222e', '#0550ae', '#6e7781']
const $ = (id) => document.getElementById(id)

let token = sessionStorage.getItem(TOKEN_KEY) ?? ''
let reconnectTimer
const charts = {}
const colorOf = new Map()

function color(name) {
  if (!colorOf.has(name)) colorOf.set(name, COLORS[colorOf.size % COLORS.length])
  return colorOf.get(name)
}

/** An element with attributes and children (strings become text: names never become markup). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v
    else if (k === 'style') e.style.cssText = v
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v)
    else e.setAttribute(k, v)
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c)
  return e
}

const authHeaders = () => (token ? { authorization: `Bearer ${token}` } : {})
const pct = (x) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1)} %`)
const ms = (x) => (x === null || x === undefined ? '–' : `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`)
const ago = (t) => `${Math.max(0, Math.round((Date.now() - t) / 1000))} s ago`

function status(text, cls = '') {
  const s = $('status')
  s.textContent = text
  s.className = cls
}

function askToken(message) {
  $('main').hidden = true
  $('login').hidden = false
  $('login-error').textContent = message ?? ''
  $('token').focus()
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault()
  token = $('token').value
  sessionStorage.setItem(TOKEN_KEY, token)
  $('login').hidden = true
  connect()
})

/** Reads the stream until it ends; every `snapshot` event is rendered. Reconnects after 2 s. */
async function connect() {
  clearTimeout(reconnectTimer)
  status('connecting…')
  let res
  try {
    res = await fetch('/api/dashboard/stream', { headers: authHeaders() })
  } catch (err) {
    status(`cannot reach the admin API: ${err.message}; retrying`, 'bad')
    reconnectTimer = setTimeout(connect, 2000)
    return
  }
  if (res.status === 401) {
    status('a token is needed', 'warn')
    askToken(token ? 'that token was refused' : '')
    return
  }
  if (!res.ok) {
    status(`the admin API answered ${res.status}; retrying`, 'bad')
    reconnectTimer = setTimeout(connect, 2000)
    return
  }
  $('main').hidden = false
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let cut
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut)
        buffer = buffer.slice(cut + 2)
        const event = /^event: (.*)$/m.exec(block)?.[1]
        const data = /^data: (.*)$/m.exec(block)?.[1]
        if (event === 'snapshot' && data) render(JSON.parse(data))
        if (event === 'error' && data) status(`the last update failed: ${JSON.parse(data).message}`, 'bad')
      }
    }
  } catch (err) {
    status(`stream cut: ${err.message}; reconnecting`, 'bad')
  }
  reconnectTimer = setTimeout(connect, 2000)
}

function render(s) {
  status(`revision ${s.revision} · ${s.storeConnected ? 'store connected' : 'STORE DISCONNECTED'} · updated ${new Date(s.at).toLocaleTimeString()}`, s.storeConnected ? 'ok' : 'bad')
  document.body.dataset.revision = s.revision
  renderRoutes(s.routes)
  renderCharts(s.series, s.at)
  renderRollouts(s.rollouts)
  renderTargets(s.upstreams)
  renderInstances(s.instances, s.revision)
  renderFlags(s.flags)
  renderEvents(s.events)
}

function renderRoutes(routes) {
  const box = $('routes')
  box.replaceChildren(
    ...routes.map((r) => {
      const total = Object.values(r.split).reduce((a, b) => a + b, 0) || 1
      const entries = Object.entries(r.split)
      const match = [r.match.host && `host ${r.match.host}`, `path ${r.match.pathPrefix ?? '/'}`, r.rules ? `${r.rules} rule${r.rules > 1 ? 's' : ''}` : null, r.sticky ? `sticky by ${r.sticky.by}` : null].filter(Boolean).join(' · ')
      return el(
        'div',
        { class: 'route', 'data-testid': `route-${r.name}` },
        el('span', { class: 'name' }, r.name),
        ' ',
        el('span', { class: 'match' }, match),
        el(
          'div',
          { class: 'bar', role: 'img', 'aria-label': `split of ${r.name}: ${entries.map(([u, w]) => `${u} ${Math.round((w / total) * 100)} %`).join(', ')}` },
          ...entries.filter(([, w]) => w > 0).map(([u, w]) => el('span', { style: `width:${(w / total) * 100}%;background:${color(u)}`, title: `${u}: ${w}` }, `${u} ${Math.round((w / total) * 100)}%`)),
        ),
        el('div', { class: 'split-numbers', 'data-testid': `split-${r.name}` }, entries.map(([u, w]) => `${u}=${w}`).join(' ')),
      )
    }),
  )
}

function renderCharts(series, at) {
  if (!series) return
  const names = Object.keys(series.upstreams)
  const x = series.times.map((t) => t / 1000)
  for (const [id, key, fmt] of [
    ['chart-rate', 'rate', (v) => (v === null ? '' : v.toFixed(1))],
    ['chart-errors', 'errorRate', (v) => (v === null ? '' : `${Math.round(v * 1000) / 10} %`)],
    ['chart-p99', 'p99Ms', (v) => (v === null ? '' : ms(v))],
  ]) {
    const box = $(id)
    const data = [x, ...names.map((n) => series.upstreams[n][key])]
    const signature = names.join(',')
    const chart = charts[id]
    if (!chart || chart.signature !== signature) {
      chart?.plot.destroy()
      const width = Math.max(200, box.clientWidth || 300)
      const plot = new uPlot(
        {
          width,
          height: 150,
          legend: { show: true },
          // From 0, and never a range so thin that flat zeros look like noise (5 % for errors).
          scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(key === 'errorRate' ? 0.05 : 1, (max ?? 0) * 1.1)] } },
          axes: [{}, { values: (_u, ticks) => ticks.map(fmt), size: 72 }],
          series: [{}, ...names.map((n) => ({ label: n, stroke: color(n), width: 2, spanGaps: false, value: (_u, v) => fmt(v) }))],
        },
        data,
        box,
      )
      charts[id] = { plot, signature }
      // Follow the box's width (a rotated phone, a resized window).
      if (!box.observed) {
        box.observed = true
        new ResizeObserver(() => charts[id]?.plot.setSize({ width: Math.max(200, box.clientWidth), height: 150 })).observe(box)
      }
    } else chart.plot.setData(data)
    // For people and tests: when it last moved, and what it holds.
    box.dataset.updated = String(at)
    box.dataset.total = String(names.reduce((a, n) => a + series.upstreams[n][key].reduce((s, v) => s + (v ?? 0), 0), 0))
  }
}

async function control(id, action) {
  const out = $('rollout-result')
  out.textContent = `${action}…`
  try {
    const res = await fetch(`/api/rollouts/${encodeURIComponent(id)}/${action}`, { method: 'POST', headers: authHeaders() })
    const body = await res.json()
    out.textContent = res.ok ? `${id}: ${body.message}` : `${id}: ${res.status} ${body.error?.message ?? ''}`
    out.className = res.ok ? 'ok' : 'bad'
  } catch (err) {
    out.textContent = `${id}: ${err.message}`
    out.className = 'bad'
  }
}

function renderRollouts(rollouts) {
  const box = $('rollouts')
  if (rollouts.length === 0) return box.replaceChildren(el('p', {}, 'No rollouts.'))
  box.replaceChildren(
    ...rollouts.map((r) => {
      const finished = ['promoted', 'aborted', 'failed'].includes(r.phase)
      const steps = r.strategy === 'blue-green' ? [0] : r.spec.steps ?? []
      const done = r.phase === 'promoted' ? steps.length : r.stepIndex + (r.strategy === 'blue-green' ? 0 : 1)
      const a = r.analysis
      const cls = r.phase === 'failed' || r.phase === 'aborted' ? 'bad' : r.phase === 'promoted' ? 'ok' : r.phase === 'paused' ? 'warn' : ''
      const button = (action, enabled) =>
        el('button', { type: 'button', 'data-testid': `rollout-${action}-${r.id}`, ...(enabled ? {} : { disabled: '' }), onclick: () => control(r.id, action) }, action)
      return el(
        'div',
        { class: 'rollout', 'data-testid': `rollout-${r.id}` },
        el('div', { class: 'head' }, el('strong', {}, r.id), el('span', {}, `${r.route}: ${r.from} → ${r.to} (${r.strategy})`), el('span', { class: `phase ${cls}`, 'data-testid': `rollout-phase-${r.id}` }, r.phase)),
        el('div', { class: 'progress', 'aria-label': `step ${Math.min(done, steps.length)} of ${steps.length}` }, steps.map((_, i) => el('span', { class: i < done ? 'done' : '' }))),
        el('div', {}, `${r.from} ${100 - r.weight} % · ${r.to} ${r.weight} %`),
        el('div', { class: 'figures' }, a ? `${a.verdict}: ${r.to} ${a.requests} req, errors ${pct(a.errorRate)}, p99 ${ms(a.p99Ms)}${a.from ? ` · ${r.from} ${a.from.requests} req, errors ${pct(a.from.errorRate)}, p99 ${ms(a.from.p99Ms)}` : ''}` : 'no analysis yet'),
        a?.shadow ? el('div', { class: 'figures', 'data-testid': `rollout-shadow-${r.id}` }, `shadow: ${a.shadow.compared} compared, mismatch ${pct(a.shadow.mismatchRate)}${a.shadow.samples[0] ? ` · e.g. ${a.shadow.samples[0].method} ${a.shadow.samples[0].path} ${a.shadow.samples[0].jsonPath ?? `${a.shadow.samples[0].status} vs ${a.shadow.samples[0].shadowStatus}`}` : ''}`) : null,
        el('div', { class: 'figures' }, r.message),
        finished ? null : el('div', { class: 'actions' }, button('pause', r.phase === 'progressing'), button('resume', r.phase === 'paused'), button('promote', true), button('abort', true)),
      )
    }),
  )
}

function renderTargets(upstreams) {
  const rows = upstreams.flatMap((u) =>
    u.targets.map((t) =>
      el(
        'tr',
        { 'data-testid': `target-${u.name}-${t.id}` },
        el('td', {}, u.name),
        el('td', { title: t.url }, t.id),
        el('td', { class: t.state === 'active' ? '' : 'warn' }, t.state),
        el('td', { class: t.healthy ? 'ok' : 'bad' }, t.healthy ? 'healthy' : `unhealthy${t.reason ? `: ${t.reason}` : ''}`),
        el('td', {}, t.inflight),
      ),
    ),
  )
  $('targets').tBodies[0].replaceChildren(...rows)
}

function renderInstances(instances, revision) {
  if (!instances) return
  $('instances').tBodies[0].replaceChildren(
    ...instances.map((i) =>
      el(
        'tr',
        {},
        el('td', {}, i.id),
        el('td', { class: i.appliedRevision === revision ? 'ok' : 'warn' }, i.appliedRevision),
        el('td', { class: i.laggard ? 'bad' : '' }, i.laggard ? 'NOT FOLLOWING' : i.behindMs ? `${i.behindMs} ms` : '–'),
        el('td', {}, ago(Date.parse(i.lastSeen))),
      ),
    ),
  )
}

function renderFlags(flags) {
  const entries = Object.entries(flags)
  $('flags').replaceChildren(...(entries.length === 0 ? [el('li', {}, 'No flags.')] : entries.map(([n, f]) => el('li', {}, `${n}: ${f.enabled ? 'on' : 'off'}${f.percent !== undefined ? ` for ${f.percent} %` : ''}`))))
}

function renderEvents(events) {
  if (!events) return
  $('events').replaceChildren(
    ...events.map((e) => el('li', {}, el('strong', {}, `r${e.revision}`), ` ${new Date(e.at).toLocaleTimeString()} ${e.actor} ${e.action} ${e.target}`, e.reason ? ` — ${e.reason}` : '')),
  )
}

connect()
