/**
 * Metric families as plain data, and the Prometheus text format (0.0.4) written from them.
 * One writer for every scrape, whoever collected the figures: this instance, or the primary
 * process summing its workers (supervisor/metrics-hub.ts), so both answer the same valid text.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'

export interface Sample {
  /** the series name: the family's, or with `_bucket`, `_sum`, `_count` for a histogram */
  name: string
  labels: Record<string, string>
  value: number
}

export interface Family {
  name: string
  help: string
  type: MetricType
  samples: Sample[]
}

/**
 * A sample value as the format spells it: `NaN`, `+Inf`, `-Inf` or a Go-parsable float.
 * (prom-client writes `Nan`, which Prometheus refuses, failing the whole scrape.)
 */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Infinity) return '+Inf'
  if (v === -Infinity) return '-Inf'
  return String(v)
}

/** The format's label-value escaping: backslash, double quote, newline. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

/** HELP text escaping: backslash and newline. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
}

export function formatLabels(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
  return parts.length === 0 ? '' : `{${parts.join(',')}}`
}

/** The text exposition of `families`, in order; a family without samples keeps its HELP and TYPE. */
export function renderFamilies(families: readonly Family[]): string {
  const lines: string[] = []
  for (const f of families) {
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`)
    for (const s of f.samples) lines.push(`${s.name}${formatLabels(s.labels)} ${formatValue(s.value)}`)
  }
  return `${lines.join('\n')}\n`
}

/** What prom-client's `Registry.getMetricsAsJSON()` answers, as far as we read it. */
interface PromJson {
  name: string
  help: string
  type: string
  values?: { value: number; labels?: Record<string, string | number>; metricName?: string }[]
}

/** prom-client's JSON as families (label values, `le` included, as strings). */
export function fromPromJson(metrics: readonly unknown[]): Family[] {
  return (metrics as PromJson[]).map((m) => ({
    name: m.name,
    help: m.help,
    type: (['counter', 'gauge', 'histogram', 'summary'].includes(m.type) ? m.type : 'untyped') as MetricType,
    samples: (m.values ?? []).map((v) => ({
      name: v.metricName ?? m.name,
      labels: Object.fromEntries(Object.entries(v.labels ?? {}).map(([k, l]) => [k, String(l)])),
      value: v.value,
    })),
  }))
}
