/**
 * `switchyard ctl diff -f FILE` and `switchyard ctl apply -f FILE`: a config file's upstreams,
 * routes and flags as the declared state of a running proxy, from a pipeline (GitOps). The file
 * is read and checked here as `switchyard validate` reads it, so a broken file never reaches the
 * API; the comparison is the server's (`PUT /api/state?dryRun=true`), against the live state.
 */
import type { Problem } from '../errors.js'
import { UsageError } from './args.js'
import { out, printWrite, type Options } from './ctl-commands.js'
import { ApiError, call, formatApiError, UnreachableError, type CtlOptions } from './ctl-http.js'

const FILE_NOTE = `  FILE is a switchyard config file, YAML or JSON (\${VAR} substituted, as switchyard start reads it); only its
  upstreams, routes and flags count: listen, admin, store and the other static parts are ignored. A file without
  flags leaves the live flags alone; a target without state keeps its live state (an operator's drain stays);
  rollouts and targets found by DNS discovery are kept.`

export const DIFF_USAGE = `usage: switchyard ctl diff -f FILE
  what applying FILE would change in the live state, like terraform plan:
  + added, ~ changed (one line per field: before → after), - removed; ! a rollout that would refuse it
${FILE_NOTE}
  -f, --file FILE        the file to compare
  --json                 the API's answer (PUT /api/state?dryRun=true) instead
  exit 0 no change, 1 changes, 2 error (a bad file, a state the API refuses, the API unreachable)`

/** `apply --wait-applied` without a value waits this long. */
export const APPLY_WAIT_DEFAULT = '60s'

export const APPLY_USAGE = `usage: switchyard ctl apply -f FILE [--if-match REV] [--wait-applied [TIMEOUT]] [--force] [--reason TEXT]
  applies FILE's upstreams, routes and flags as one revisioned, audited write (PUT /api/state) and prints
  what changed and the new revision; nothing to change writes nothing
${FILE_NOTE}
  -f, --file FILE        the file to apply
  --if-match REV         apply only if the state is still at revision REV (e.g. the one ctl diff compared with)
  --wait-applied [T]     answer once every instance applied it (default ${APPLY_WAIT_DEFAULT}); exit 1 if one has not in time
  --force                abort the rollouts whose route or upstreams the file changes (at once), and apply
  --reason TEXT          recorded in the audit log
  exit 0 applied (or nothing to change), 1 refused (409 a rollout drives a route or upstream the file changes,
  412 stale --if-match, 400) or the API unreachable, 2 usage or a file with problems`

interface FieldChange {
  path: string
  before?: unknown
  after?: unknown
}

interface Change {
  kind: string
  op: string
  name?: string
  fields?: FieldChange[]
  before?: unknown
  after?: unknown
}

interface Applied {
  revision: number
  changed: boolean
  changes: Change[]
  conflicts: { rollout: string; phase: string; route: string; reason: string }[]
  aborted: string[]
}

/** The file's state part, or its problems (only those of the state part and of the file itself). */
async function readState(file: string): Promise<{ body: Record<string, unknown> } | { problems: Problem[] }> {
  // Loaded here, not at the top: the config checker (schemas compiled on load) costs every other
  // ctl command ~0.4 s of start-up for nothing.
  const { loadConfigFile, STATE_KEYS } = await import('../config/load.js')
  const { config, problems } = await loadConfigFile(file)
  // The CA files an upstream's tls.ca names are the server's to read (its paths, on its host):
  // this machine may not have them, and the server checks them on the write.
  const ofState = problems.filter(
    (p) => (p.path === '' || STATE_KEYS.some((k) => p.path === k || p.path.startsWith(`${k}.`) || p.path.startsWith(`${k}[`))) && !/^upstreams\.[^.]+\.tls\.ca$/.test(p.path),
  )
  if (ofState.length > 0) return { problems: ofState }
  const body: Record<string, unknown> = { upstreams: config.upstreams, routes: config.routes }
  if (config.flags !== undefined) body['flags'] = config.flags
  return { body }
}

function fileOf(pos: string[], o: Options, command: string): string {
  if (pos.length > 0) throw new UsageError(`${command} takes no arguments besides -f FILE (got ${JSON.stringify(pos[0])})`)
  const file = o.get('file')
  if (file === undefined) throw new UsageError(`${command} needs -f FILE`)
  return file
}

function printProblems(file: string, problems: Problem[]): number {
  const lines = problems.map((p) => `  ${p.path === '' ? file : p.path}: ${p.message}\n`).join('')
  process.stderr.write(`switchyard ctl: ${file} has ${problems.length} problem${problems.length === 1 ? '' : 's'}; nothing was sent:\n${lines}`)
  return 2
}

/** `90`, `true`, `draining`, `"/api v2"`: bare where that reads unambiguously. */
function value(v: unknown): string {
  if (v === undefined) return '(none)'
  if (typeof v === 'string') return /^[\w.:/*@-]+$/.test(v) ? v : JSON.stringify(v)
  return JSON.stringify(v)
}

/** Without the name a route repeats in its header line. */
function body(v: unknown): string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return value(v)
  const { name: _name, ...rest } = v as Record<string, unknown>
  return JSON.stringify(rest)
}

/** The plan, terraform-like: one line per resource, one indented line per changed field. */
export function formatChanges(a: Applied): string {
  const lines: string[] = []
  const count = { add: 0, change: 0, remove: 0 }
  for (const c of a.changes) {
    if (c.kind === 'routes') {
      count.change++
      lines.push(`~ route order: ${(c.before as string[]).join(', ')} → ${(c.after as string[]).join(', ')}`)
    } else if (c.op === 'add') {
      count.add++
      lines.push(`+ ${c.kind} ${c.name!} ${body(c.after)}`)
    } else if (c.op === 'remove') {
      count.remove++
      lines.push(`- ${c.kind} ${c.name!}`)
    } else {
      count.change++
      lines.push(`~ ${c.kind} ${c.name!}`)
      for (const f of c.fields ?? []) lines.push(`    ${f.path}: ${value(f.before)} → ${value(f.after)}`)
    }
  }
  for (const k of a.conflicts) lines.push(`! rollout ${k.rollout} (${k.phase}) drives route ${k.route} and this file ${k.reason}`)
  lines.push(`${count.add} to add, ${count.change} to change, ${count.remove} to remove`)
  return lines.join('\n')
}

export async function diff(opts: CtlOptions, pos: string[], o: Options): Promise<number> {
  const file = fileOf(pos, o, 'diff')
  const read = await readState(file)
  if ('problems' in read) return printProblems(file, read.problems)
  let answer: Applied
  try {
    answer = (await call(opts, { method: 'PUT', path: '/api/state', query: { dryRun: 'true' }, body: read.body })).body as Applied
  } catch (err) {
    // 1 means "changes" here: every failure is 2.
    if (err instanceof ApiError) process.stderr.write(formatApiError(err))
    else if (err instanceof UnreachableError) process.stderr.write(`switchyard ctl: cannot reach the admin API at ${opts.admin}: ${err.message}\n`)
    else throw err
    return 2
  }
  if (opts.json) out(JSON.stringify(answer, null, 2))
  else if (!answer.changed) out(`no changes: the live state (revision ${answer.revision}) matches ${file}`)
  else {
    out(formatChanges(answer))
    if (answer.conflicts.length > 0) out('apply would be refused (409) while these rollouts run; apply --force aborts them')
    out(`compared with revision ${answer.revision}`)
  }
  return answer.changed ? 1 : 0
}

export async function apply(opts: CtlOptions, pos: string[], o: Options): Promise<number> {
  const file = fileOf(pos, o, 'apply')
  const read = await readState(file)
  if ('problems' in read) return printProblems(file, read.problems)
  const force = o.has('force') ? { force: 'true' } : {}
  const answer = await call(opts, { method: 'PUT', path: '/api/state', query: force, body: read.body, write: true })
  const applied = answer.body as Applied
  if (!opts.json) {
    if (applied.changed) out(formatChanges(applied))
    for (const id of applied.aborted) out(`aborted: rollout ${id}`)
    if (!applied.changed) out(`no changes: the live state matches ${file}`)
  }
  return printWrite(opts, answer)
}
