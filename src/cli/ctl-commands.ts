/** The write and flag commands of `switchyard ctl`; each returns its exit code. */
import { UsageError } from './args.js'
import { call, writeResult, type Answer, type CtlOptions } from './ctl-http.js'

export type Options = Map<string, string>

const enc = encodeURIComponent

/** `500ms`, `30s`, `2m` or a bare number of milliseconds → ms. */
export function parseDuration(text: string, what: string): number {
  const m = /^([0-9]{1,9})(ms|s|m)?$/.exec(text)
  if (m === null) throw new UsageError(`${what} must be a duration like 500ms, 30s, 2m or a number of ms, not ${JSON.stringify(text)}`)
  const n = Number(m[1])
  return m[2] === 'm' ? n * 60_000 : m[2] === 's' ? n * 1000 : n
}

/** Exactly `count` positionals after the command words, else a usage error naming them. */
function expect(pos: string[], count: number, shape: string): string[] {
  if (pos.length !== count) throw new UsageError(`expected: switchyard ctl ${shape}`)
  return pos
}

/** Prints `text` as one or more lines on stdout. */
export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n')
}

/** Prints a write's answer (raw with --json) and returns its exit code. */
export function printWrite(opts: CtlOptions, answer: Answer): number {
  const { line, code } = writeResult(answer)
  out(opts.json ? JSON.stringify(answer.body, null, 2) : line)
  return code
}

/** `split ROUTE v1=90 v2=10`: checked here so a typo never reaches the live knob. */
export function parseSplit(pairs: string[]): Record<string, number> {
  if (pairs.length === 0) throw new UsageError('split needs at least one UPSTREAM=WEIGHT pair')
  const split: Record<string, number> = {}
  for (const pair of pairs) {
    const m = /^([^=\s]+)=([0-9]{1,7})$/.exec(pair)
    if (m === null) throw new UsageError(`bad split pair ${JSON.stringify(pair)}: expected UPSTREAM=WEIGHT with an integer weight`)
    if (Object.hasOwn(split, m[1]!)) throw new UsageError(`upstream ${JSON.stringify(m[1])} is given twice`)
    split[m[1]!] = Number(m[2])
  }
  return split
}

export async function split(opts: CtlOptions, pos: string[]): Promise<number> {
  const [route, ...pairs] = pos
  if (route === undefined) throw new UsageError('expected: switchyard ctl split ROUTE UPSTREAM=WEIGHT...')
  const body = parseSplit(pairs)
  return printWrite(opts, await call(opts, { method: 'PUT', path: `/api/routes/${enc(route)}/split`, body, write: true }))
}

/**
 * Shared by `drain` and `target remove`: `--wait` becomes `?waitMs=`; a 202 with
 * `drained: false` means the deadline passed with requests still in flight.
 */
function waitQuery(o: Options): { waitMs?: string } {
  const wait = o.get('wait')
  return wait === undefined ? {} : { waitMs: String(parseDuration(wait, '--wait')) }
}

export async function drain(opts: CtlOptions, pos: string[], o: Options): Promise<number> {
  const [upstream, target] = expect(pos, 2, 'drain UPSTREAM TARGET [--wait 30s]')
  const query = waitQuery(o)
  const answer = await call(opts, { method: 'POST', path: `/api/upstreams/${enc(upstream!)}/targets/${enc(target!)}/drain`, query, write: true })
  const body = answer.body as { drained?: boolean; inflight?: number }
  if (body.drained === false) {
    if (opts.json) out(JSON.stringify(body, null, 2))
    process.stderr.write(`switchyard ctl: ${upstream}/${target} is draining but not drained after ${o.get('wait')}: ${String(body.inflight)} request(s) still in flight\n`)
    return 1
  }
  const code = printWrite(opts, answer)
  if (!opts.json && body.drained === true) out(`drained: ${upstream}/${target} has no request in flight`)
  return code
}

export async function target(opts: CtlOptions, pos: string[], o: Options): Promise<number> {
  const [sub, ...rest] = pos
  if (sub === 'add') {
    const [upstream, url] = expect(rest, 2, 'target add UPSTREAM URL [--id ID]')
    const id = o.get('id')
    const body = id === undefined ? { url } : { url, id }
    const answer = await call(opts, { method: 'POST', path: `/api/upstreams/${enc(upstream!)}/targets`, body, write: true })
    const code = printWrite(opts, answer)
    if (!opts.json) out(`added: ${upstream}/${String((answer.body as { id?: string }).id)}`)
    return code
  }
  if (sub === 'remove') {
    const [upstream, id] = expect(rest, 2, 'target remove UPSTREAM TARGET [--wait 30s]')
    const path = `/api/upstreams/${enc(upstream!)}/targets/${enc(id!)}`
    const answer = await call(opts, { method: 'DELETE', path, query: waitQuery(o), write: true })
    const code = printWrite(opts, answer)
    const body = answer.body as { drained?: boolean; inflight?: number }
    // The API removes the target at the deadline anyway; say so, since requests may have been cut.
    if (body.drained === false) process.stderr.write(`switchyard ctl: warning: removed before it drained (${String(body.inflight)} request(s) were in flight)\n`)
    return code
  }
  throw new UsageError('expected: switchyard ctl target add|remove ...')
}

interface Flag {
  name?: string
  enabled: boolean
  percent?: number
  by?: { header?: string; cookie?: string; ip?: boolean }
}

/** `beta  on  25%  by header x-user` */
function flagLine(name: string, f: Flag): string {
  const by = f.by?.header !== undefined ? `by header ${f.by.header}` : f.by?.cookie !== undefined ? `by cookie ${f.by.cookie}` : f.by?.ip ? 'by ip' : ''
  return [name, f.enabled ? 'on' : 'off', f.percent === undefined ? '' : `${f.percent}%`, by].filter((s) => s !== '').join('  ')
}

function flagBody(state: string | undefined, o: Options): Flag {
  if (state !== 'on' && state !== 'off') throw new UsageError('expected: switchyard ctl flag set NAME on|off [--percent N] [--by-header H | --by-cookie C | --by-ip]')
  const flag: Flag = { enabled: state === 'on' }
  const percent = o.get('percent')
  if (percent !== undefined) {
    if (!/^[0-9]+(\.[0-9]+)?$/.test(percent) || Number(percent) > 100) throw new UsageError(`--percent must be a number from 0 to 100, not ${JSON.stringify(percent)}`)
    flag.percent = Number(percent)
  }
  const header = o.get('by-header')
  const cookie = o.get('by-cookie')
  const ip = o.get('by-ip')
  if ([header, cookie, ip].filter((v) => v !== undefined).length > 1) throw new UsageError('give at most one of --by-header, --by-cookie, --by-ip')
  if (header !== undefined) flag.by = { header }
  else if (cookie !== undefined) flag.by = { cookie }
  else if (ip !== undefined) flag.by = { ip: true }
  return flag
}

export async function flag(opts: CtlOptions, pos: string[], o: Options): Promise<number> {
  const [sub, ...rest] = pos
  if (sub === 'set') {
    const [name, state] = expect(rest, 2, 'flag set NAME on|off [--percent N] [--by-header H | --by-cookie C | --by-ip]')
    const body = flagBody(state, o)
    return printWrite(opts, await call(opts, { method: 'PUT', path: `/api/flags/${enc(name!)}`, body, write: true }))
  }
  if (sub === 'get') {
    const [name] = expect(rest, 1, 'flag get NAME')
    const { body } = await call(opts, { method: 'GET', path: `/api/flags/${enc(name!)}` })
    out(opts.json ? JSON.stringify(body, null, 2) : flagLine(name!, body as Flag))
    return 0
  }
  if (sub === 'list') {
    expect(rest, 0, 'flag list')
    const { body } = await call(opts, { method: 'GET', path: '/api/flags' })
    const flags = (body as { flags: (Flag & { name: string })[] }).flags
    if (opts.json) out(JSON.stringify(body, null, 2))
    else out(flags.length === 0 ? 'no flags' : flags.map(({ name: n, ...f }) => flagLine(n, f)).join('\n'))
    return 0
  }
  throw new UsageError('expected: switchyard ctl flag set|get|list ...')
}
