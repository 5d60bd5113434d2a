/**
 * A strict reader of the Prometheus text format (0.0.4), as strict as Prometheus's own parser
 * on the points that fail a scrape: every line a `# HELP`, a `# TYPE` or a sample; metric and
 * label names by the grammar; label values with only `\\`, `\"` and `\n` escapes; values Go
 * floats or exactly `NaN`, `+Inf`, `-Inf` (so `Nan` is refused); no series twice; a family's
 * TYPE before its samples and its samples together. Histograms are checked too: ascending `le`,
 * non-decreasing counts, a `+Inf` bucket equal to `_count`. Throws on the first fault.
 */

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface Scrape {
  text: string
  samples: Sample[]
  /** `# TYPE` per family name */
  types: Map<string, string>
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const FLOAT = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

export function parseValue(text: string): number {
  if (text === 'NaN') return NaN
  if (text === '+Inf' || text === 'Inf') return Infinity
  if (text === '-Inf') return -Infinity
  if (!FLOAT.test(text)) throw new Error(`not a valid sample value: ${JSON.stringify(text)}`)
  return Number(text)
}

/** `{a="x",b="y"}` starting at `line[i]`; returns the labels and the index after `}`. */
function readLabels(line: string, i: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {}
  i++ // {
  while (line[i] !== '}') {
    const eq = line.indexOf('=', i)
    if (eq < 0) throw new Error(`label without "=": ${line}`)
    const name = line.slice(i, eq)
    if (!LABEL_NAME.test(name)) throw new Error(`bad label name ${JSON.stringify(name)}: ${line}`)
    if (Object.hasOwn(labels, name)) throw new Error(`label ${name} twice: ${line}`)
    if (line[eq + 1] !== '"') throw new Error(`label value not quoted: ${line}`)
    let j = eq + 2
    let value = ''
    for (;;) {
      const c = line[j]
      if (c === undefined) throw new Error(`unterminated label value: ${line}`)
      if (c === '"') break
      if (c === '\\') {
        const e = line[j + 1]
        if (e === '\\' || e === '"') value += e
        else if (e === 'n') value += '\n'
        else throw new Error(`bad escape \\${e} in a label value: ${line}`)
        j += 2
      } else {
        value += c
        j++
      }
    }
    labels[name] = value
    i = j + 1
    if (line[i] === ',') i++
    else if (line[i] !== '}') throw new Error(`expected "," or "}" after a label: ${line}`)
  }
  return { labels, end: i + 1 }
}

/** The family a sample name belongs to, given the declared types. */
function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name
  for (const suffix of ['_bucket', '_sum', '_count']) {
    const base = name.endsWith(suffix) ? name.slice(0, -suffix.length) : undefined
    if (base !== undefined && (types.get(base) === 'histogram' || (suffix !== '_bucket' && types.get(base) === 'summary'))) return base
  }
  return undefined
}

const seriesKey = (name: string, labels: Record<string, string>) => `${name}${JSON.stringify(Object.entries(labels).sort())}`

export function parseStrict(text: string): Scrape {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline')
  const samples: Sample[] = []
  const types = new Map<string, string>()
  const helps = new Set<string>()
  const seen = new Set<string>()
  const closed = new Set<string>()
  let current: string | undefined
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') throw new Error('an empty line')
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line)
      if (m === null) {
        if (/^# (HELP|TYPE)\b/.test(line)) throw new Error(`malformed ${line}`)
        continue // a plain comment
      }
      const [, kind, name, rest] = m as unknown as [string, string, string, string]
      if (!METRIC_NAME.test(name)) throw new Error(`bad metric name ${JSON.stringify(name)}`)
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`unknown type ${rest} for ${name}`)
        if (types.has(name)) throw new Error(`TYPE twice for ${name}`)
        if (closed.has(name) || current === name) throw new Error(`TYPE after samples of ${name}`)
        types.set(name, rest)
      } else {
        if (helps.has(name)) throw new Error(`HELP twice for ${name}`)
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) throw new Error(`bad escape in HELP of ${name}`)
        helps.add(name)
      }
      continue
    }
    const nameEnd = line.search(/[{ ]/)
    if (nameEnd <= 0) throw new Error(`not a sample line: ${JSON.stringify(line)}`)
    const name = line.slice(0, nameEnd)
    if (!METRIC_NAME.test(name)) throw new Error(`bad metric name ${JSON.stringify(name)}`)
    let labels: Record<string, string> = {}
    let i = nameEnd
    if (line[i] === '{') ({ labels, end: i } = readLabels(line, i))
    if (line[i] !== ' ') throw new Error(`expected a space before the value: ${JSON.stringify(line)}`)
    const [valueText, timestamp, ...extra] = line.slice(i + 1).split(' ')
    if (extra.length > 0 || (timestamp !== undefined && !/^-?[0-9]+$/.test(timestamp))) throw new Error(`trailing junk: ${JSON.stringify(line)}`)
    const value = parseValue(valueText ?? '')
    const family = familyOf(name, types) ?? name
    if (family !== current) {
      if (current !== undefined) closed.add(current)
      if (closed.has(family)) throw new Error(`samples of ${family} are not together`)
      current = family
    }
    const key = seriesKey(name, labels)
    if (seen.has(key)) throw new Error(`series twice: ${line}`)
    seen.add(key)
    const type = types.get(family)
    if (type === 'counter' && !(value >= 0)) throw new Error(`a counter must be a number >= 0: ${line}`)
    if (type === 'histogram' && name === `${family}_bucket` && labels['le'] === undefined) throw new Error(`a bucket without le: ${line}`)
    samples.push({ name, labels, value })
  }
  checkHistograms(samples, types)
  return { text, samples, types }
}

function checkHistograms(samples: Sample[], types: Map<string, string>): void {
  for (const [family, type] of types) {
    if (type !== 'histogram') continue
    const groups = new Map<string, { le: number; n: number }[]>()
    for (const s of samples.filter((x) => x.name === `${family}_bucket`)) {
      const { le, ...rest } = s.labels
      const key = JSON.stringify(Object.entries(rest).sort())
      const list = groups.get(key) ?? []
      list.push({ le: parseValue(le!), n: s.value })
      groups.set(key, list)
    }
    for (const [key, buckets] of groups) {
      for (let i = 1; i < buckets.length; i++) {
        if (!(buckets[i]!.le > buckets[i - 1]!.le)) throw new Error(`${family}${key}: le not ascending`)
        if (buckets[i]!.n < buckets[i - 1]!.n) throw new Error(`${family}${key}: bucket counts decrease`)
      }
      if (buckets.at(-1)?.le !== Infinity) throw new Error(`${family}${key}: no +Inf bucket`)
      const labels = Object.fromEntries(JSON.parse(key) as [string, string][])
      const count = samples.find((s) => s.name === `${family}_count` && seriesKey('', s.labels) === seriesKey('', labels))
      if (count === undefined || count.value !== buckets.at(-1)!.n) throw new Error(`${family}${key}: _count is not the +Inf bucket`)
    }
  }
}
