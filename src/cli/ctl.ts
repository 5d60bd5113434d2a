/**
 * `switchyard ctl`: drives a running proxy through its admin API.
 * Exit codes: 0 done, 1 the API refused or could not be reached (or a wait ran out), 2 usage.
 */
import { parseArgs } from 'node:util'
import { parseCommand, usageError as usageErrorFor, UsageError, type CommandSpec } from './args.js'
import { drain, flag, parseDuration, split, target } from './ctl-commands.js'
import { apply, APPLY_USAGE, APPLY_WAIT_DEFAULT, diff, DIFF_USAGE } from './ctl-apply.js'
import { ApiError, formatApiError, UnreachableError, type CtlOptions } from './ctl-http.js'
import { replace, REPLACE_USAGE } from './ctl-replace.js'
import { events, EVENTS_USAGE, rollout, ROLLOUT_OPTIONS, ROLLOUT_USAGE } from './ctl-rollout.js'
import { status } from './ctl-status.js'

export const CTL_USAGE = `usage: switchyard ctl [options] COMMAND
  status                                   routes and splits, targets and health, the fleet
  split ROUTE UPSTREAM=WEIGHT...           e.g. split api v1=90 v2=10 (integer weights)
  drain UPSTREAM TARGET [--wait 30s]       stop new requests; with --wait, exit 1 unless drained in time
  target add UPSTREAM URL [--id ID]
  target remove UPSTREAM TARGET [--wait 30s]
  target replace UPSTREAM URL... [--max-surge N] [--max-unavailable N] [--wait [TIMEOUT]]
                                           rolling replacement of the upstream's targets
  flag set NAME on|off [--percent N] [--by-header H | --by-cookie C | --by-ip]
  flag get NAME
  flag list
  rollout start --route R --from V1 --to V2 [--steps 10,50,100] [--pause 30s] [--wait] ...
  rollout status [ID] [--watch] | list | pause ID | resume ID | promote ID | abort ID
  events [--limit N] [--follow]            the audit log
  diff -f FILE                             what applying a config file's upstreams, routes, flags would change
  apply -f FILE [--force]                  apply them as one write (exit 1 if refused)
  (switchyard ctl rollout start --help, ... lists each command's options)
options:
  --admin URL          admin API (else $SWITCHYARD_ADMIN_URL, else http://127.0.0.1:9901)
  --token T            bearer token (else $SWITCHYARD_ADMIN_TOKEN)
  --reason TEXT        recorded in the audit log with a write
  --if-match REV       the write only applies if the state is still at revision REV
  --wait-applied MS    answer once every instance applied the write (exit 1 if one has not)
  --json               print the API's JSON answer instead of the human form
  -h, --help           this help
durations: 500ms, 30s, 2m or a number of milliseconds`

const STRING_OPTIONS = [
  'admin', 'token', 'reason', 'if-match', 'wait-applied', 'wait', 'id', 'percent', 'by-header', 'by-cookie',
  'route', 'from', 'to', 'steps', 'pause', 'strategy', 'preview-header', 'interval', 'min-requests', 'max-error-rate', 'max-p99', 'failure-limit', 'max-mismatch-rate', 'ignore', 'limit',
  'max-surge', 'max-unavailable', 'healthy-timeout', 'drain-wait',
] as const
/** Boolean options besides --json and --by-ip; `--wait` of `rollout start` is one, `drain --wait 30s` takes a value. */
const ROLLOUT_FLAGS = ['watch', 'follow', 'force']
const COMMAND: CommandSpec = {
  name: 'ctl',
  usage: CTL_USAGE,
  options: {
    ...Object.fromEntries(STRING_OPTIONS.map((name) => [name, { type: 'string' }])),
    json: { type: 'boolean' },
    'by-ip': { type: 'boolean' },
    ...Object.fromEntries(ROLLOUT_FLAGS.map((name) => [name, { type: 'boolean' }])),
    file: { type: 'string', short: 'f' },
  },
}
const GLOBAL = ['admin', 'token', 'reason', 'if-match', 'wait-applied', 'json']
/** Options each command accepts besides the global ones: anything else is a typo, refused. */
const COMMAND_OPTIONS: Record<string, string[]> = {
  status: [],
  split: [],
  drain: ['wait'],
  'target add': ['id'],
  'target remove': ['wait'],
  'target replace': ['wait', 'max-surge', 'max-unavailable', 'healthy-timeout', 'drain-wait'],
  'flag set': ['percent', 'by-header', 'by-cookie', 'by-ip'],
  'flag get': [],
  'flag list': [],
  events: ['limit', 'follow'],
  diff: ['file'],
  apply: ['file', 'force'],
  ...Object.fromEntries(Object.entries(ROLLOUT_OPTIONS).map(([sub, names]) => [`rollout ${sub}`, names])),
}

/** The command words, read leniently (before the strict parse reports any problem). */
function positionalsOf(args: string[]): string[] {
  // --wait may be bare here (`rollout start --wait`): read as a flag, it cannot swallow a word.
  const options = { ...COMMAND.options, wait: { type: 'boolean' as const } }
  return parseArgs({ args, options, strict: false, allowPositionals: true }).positionals
}

/** `rollout start --help` and `events --help` print their own usage (with their options). */
function subcommandHelp(args: string[]): string | undefined {
  if (!args.includes('--help') && !args.includes('-h')) return undefined
  const positionals = positionalsOf(args)
  if (positionals[0] === 'events') return EVENTS_USAGE
  if (positionals[0] === 'diff') return DIFF_USAGE
  if (positionals[0] === 'apply') return APPLY_USAGE
  if (positionals[0] === 'target' && positionals[1] === 'replace') return REPLACE_USAGE
  if (positionals[0] === 'rollout') return ROLLOUT_USAGE[positionals[1] ?? ''] ?? Object.values(ROLLOUT_USAGE).join('\n\n')
  return undefined
}

/**
 * `rollout start --wait` is a flag while `drain --wait 30s` takes a value: for `rollout start`
 * a bare `--wait` (last, or followed by another option) is given the value `true`. Likewise a
 * bare `apply --wait-applied` waits the default time (a pipeline wants "until it is in force").
 */
function bareWait(args: string[]): string[] {
  const positionals = positionalsOf(args)
  const bare = (i: number) => i === args.length - 1 || args[i + 1]!.startsWith('-')
  if (positionals[0] === 'apply') return args.map((a, i) => (a === '--wait-applied' && bare(i) ? `--wait-applied=${APPLY_WAIT_DEFAULT}` : a))
  // `target replace --wait [TIMEOUT]`: a word after it that is no duration is a URL, not its value.
  if (positionals[0] === 'target' && positionals[1] === 'replace') {
    return args.map((a, i) => (a === '--wait' && (bare(i) || !/^[0-9]{1,9}(ms|s|m)?$/.test(args[i + 1]!)) ? '--wait=true' : a))
  }
  if (positionals[0] !== 'rollout' || positionals[1] !== 'start') return args
  return args.map((a, i) => (a === '--wait' && (i === args.length - 1 || args[i + 1]!.startsWith('--')) ? '--wait=true' : a))
}

function usageError(message: string): number {
  return usageErrorFor(COMMAND, message)
}

export async function ctl(args: string[]): Promise<number> {
  const help = subcommandHelp(args)
  if (help !== undefined) {
    process.stdout.write(help + '\n')
    return 0
  }
  const parsed = parseCommand(bareWait(args), COMMAND)
  if (typeof parsed === 'number') return parsed
  const positional = parsed.positionals
  // What the commands read: every option given, flags as "true".
  const options = new Map(Object.entries(parsed.values).map(([k, v]) => [k, String(v)]))
  if (positional[0] === 'help') {
    process.stdout.write(CTL_USAGE + '\n')
    return 0
  }
  const [command, ...rest] = positional
  if (command === undefined) return usageError('no command given')
  const grouped = command === 'target' || command === 'flag' || command === 'rollout'
  const key = grouped ? `${command} ${rest[0] ?? ''}` : command
  const allowed = COMMAND_OPTIONS[key]
  if (allowed === undefined && !grouped) return usageError(`unknown command ${JSON.stringify(command)}`)
  for (const name of options.keys()) {
    if (!GLOBAL.includes(name) && !(allowed ?? []).includes(name)) return usageError(`unknown option --${name}${allowed ? ` for ${key}` : ''}`)
  }

  const admin = options.get('admin') ?? process.env['SWITCHYARD_ADMIN_URL'] ?? 'http://127.0.0.1:9901'
  if (!URL.canParse(admin) || !/^https?:$/.test(new URL(admin).protocol)) return usageError(`--admin must be an http(s) URL, not ${JSON.stringify(admin)}`)
  const ifMatch = options.get('if-match')
  if (ifMatch !== undefined && !/^[0-9]{1,15}$/.test(ifMatch)) return usageError(`--if-match must be a revision number, not ${JSON.stringify(ifMatch)}`)
  const waitApplied = options.get('wait-applied')
  const opts: CtlOptions = {
    admin,
    token: options.get('token') ?? (process.env['SWITCHYARD_ADMIN_TOKEN'] || undefined),
    reason: options.get('reason'),
    ifMatch,
    json: options.has('json'),
    waitApplied: undefined,
  }

  try {
    if (waitApplied !== undefined) opts.waitApplied = String(parseDuration(waitApplied, '--wait-applied'))
    switch (command) {
      case 'status':
        if (rest.length > 0) throw new UsageError('status takes no arguments')
        return await status(opts)
      case 'split':
        return await split(opts, rest)
      case 'drain':
        return await drain(opts, rest, options)
      case 'target':
        if (rest[0] === 'replace') return await replace(opts, rest.slice(1), options)
        return await target(opts, rest, options)
      case 'flag':
        return await flag(opts, rest, options)
      case 'rollout':
        return await rollout(opts, rest, options)
      case 'events':
        return await events(opts, rest, options)
      case 'diff':
        return await diff(opts, rest, options)
      case 'apply':
        return await apply(opts, rest, options)
    }
    return usageError(`unknown command ${JSON.stringify(command)}`)
  } catch (err) {
    if (err instanceof UsageError) return usageError(err.message)
    if (err instanceof ApiError) {
      if (opts.json && err.body !== undefined) process.stdout.write(JSON.stringify(err.body, null, 2) + '\n')
      process.stderr.write(formatApiError(err))
      return 1
    }
    if (err instanceof UnreachableError) {
      process.stderr.write(`switchyard ctl: cannot reach the admin API at ${admin}: ${err.message}\n`)
      return 1
    }
    throw err
  }
}
