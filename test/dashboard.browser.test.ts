/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core, headless) on a
 * running proxy under traffic: token, routes and split numbers, charts that move, a split
 * written through the API showing without a reload, a rollout aborted with its button, and
 * every section readable at a phone's 390 px. A screenshot is kept in test/.artifacts/.
 */
import { mkdir } from 'node:fs/promises'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest'
import { startApp } from './helpers/admin.js'
import { startLoad } from './helpers/load.js'
import { statusBackend } from './helpers/status-backend.js'

const CHROMIUM = process.env['SWITCHYARD_TEST_CHROMIUM'] ?? '/usr/bin/chromium'
const ARTIFACTS = new URL('./.artifacts/', import.meta.url)
const TOKEN = 'dashboard-token'

let browser: Browser
beforeAll(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] })
})
afterAll(async () => {
  await browser?.close()
})

const text = (page: Page, testid: string) => page.getByTestId(testid).textContent()

it('shows a live fleet: token, routes and splits, moving charts, a split change without reload, a rollout aborted by its button, a phone-wide layout', async () => {
  const v1 = await statusBackend('v1')
  const v2 = await statusBackend('v2')
  const t = await startApp(
    {
      admin: { token: TOKEN },
      upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100, v2: 0 } }],
      flags: { beta: { enabled: true, percent: 25, by: { header: 'x-user-id' } } },
    },
    { token: TOKEN, telemetryMs: 200 },
  )
  const load = startLoad(t.app.proxyUrl, { workers: 2, maxMs: 60_000 })
  onTestFinished(() => load.stop().then(() => undefined))

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  onTestFinished(() => page.close())
  const pageErrors: string[] = []
  page.on('pageerror', (e) => pageErrors.push(e.message))
  await page.goto(t.app.adminUrl + '/')

  // no token yet: the page asks for one, and refuses a wrong one
  await page.getByTestId('token-input').fill('wrong')
  await page.getByTestId('token-submit').click()
  await expect.poll(() => page.locator('#login-error').textContent(), { timeout: 5000 }).toContain('refused')
  await page.getByTestId('token-input').fill(TOKEN)
  await page.getByTestId('token-input').press('Enter') // usable without a mouse

  await expect.poll(() => text(page, 'split-api'), { timeout: 5000 }).toBe('v1=100 v2=0')
  expect(await text(page, 'flags')).toContain('beta: on for 25 %')
  expect(await page.getByTestId(`target-v1-${v1.id}`).textContent()).toContain('healthy')

  // the charts move: updated again and again, and carry the traffic
  const chart = page.getByTestId('chart-rate')
  const first = await chart.getAttribute('data-updated')
  await expect.poll(() => chart.getAttribute('data-updated'), { timeout: 6000 }).not.toBe(first)
  await expect.poll(async () => Number(await chart.getAttribute('data-total')), { timeout: 8000 }).toBeGreaterThan(0)
  expect(await chart.locator('canvas').count()).toBeGreaterThan(0)

  // a split written through the API shows within 5 s, without a reload
  const put = await t.admin.put('/api/routes/api/split', { v1: 70, v2: 30 })
  expect(put.status).toBe(200)
  await expect.poll(() => text(page, 'split-api'), { timeout: 5000 }).toBe('v1=70 v2=30')

  // a rollout appears; its abort button aborts it
  const started = await t.admin.post('/api/rollouts', { id: 'ui1', route: 'api', from: 'v1', to: 'v2', steps: [{ weight: 40, pauseMs: 600_000 }] })
  expect(started.status).toBe(201)
  await expect.poll(() => text(page, 'rollout-phase-ui1'), { timeout: 5000 }).toBe('progressing')
  await page.getByTestId('rollout-abort-ui1').click()
  await expect.poll(() => text(page, 'rollout-phase-ui1'), { timeout: 5000 }).toBe('aborted')
  expect((await t.admin.get('/api/rollouts/ui1')).body.phase).toBe('aborted')
  await expect.poll(() => text(page, 'events'), { timeout: 5000 }).toContain('rollout.abort')

  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: new URL('dashboard.png', ARTIFACTS).pathname, fullPage: true })

  // a phone: every section is there, inside the width, with no sideways scrolling of the page
  await page.setViewportSize({ width: 390, height: 844 })
  for (const section of ['routes', 'traffic', 'rollouts', 'targets', 'instances', 'flags', 'events']) {
    const box = await page.getByTestId(`${section}-section`).boundingBox()
    expect(box, section).not.toBeNull()
    expect(box!.x, section).toBeGreaterThanOrEqual(0)
    expect(box!.x + box!.width, section).toBeLessThanOrEqual(390)
    expect(box!.height, section).toBeGreaterThan(0)
  }
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390)
  await page.screenshot({ path: new URL('dashboard-390.png', ARTIFACTS).pathname, fullPage: true })
  expect(pageErrors).toEqual([])
})
