/**
 * Argument parsing shared by every command: `node:util` `parseArgs` in strict mode, so an
 * unknown or misspelt option (`--wrokers 4`) is a usage error instead of being ignored. Each
 * command gets `--help` / `-h` for free. Conventions (README "Commands"): help on stdout and
 * exit 0; a usage error prints the problem and the usage on stderr and exits 2.
 */
import { parseArgs } from 'node:util'

/** Options as `node:util` `parseArgs` takes them. */
export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>

export interface CommandSpec {
  /** `start`, `ctl`...: prefixes error messages (`switchyard start: ...`) */
  name: string
  usage: string
  options: OptionSpec
}

export interface Parsed {
  values: Record<string, string | boolean | undefined>
  positionals: string[]
}

/** A usage error found after parsing (a bad value, a missing argument): exit 2 with the usage. */
export class UsageError extends Error {}

/**
 * Parses `args` for `spec`. Returns the parsed arguments, or the exit code when the command is
 * already answered: 0 after printing the usage for `--help`, 2 after a usage error.
 */
export function parseCommand(args: string[], spec: CommandSpec): Parsed | number {
  const options: OptionSpec = { ...spec.options, help: { type: 'boolean', short: 'h' } }
  let parsed
  try {
    parsed = parseArgs({
      args: attachDashValues(args, options),
      options,
      strict: true,
      allowPositionals: true,
    })
  } catch (err) {
    return usageError(spec, parseErrorMessage(err))
  }
  if (parsed.values['help'] === true) {
    process.stdout.write(spec.usage + '\n')
    return 0
  }
  const { help: _help, ...values } = parsed.values
  return { values: values as Parsed['values'], positionals: parsed.positionals }
}

/** Prints `switchyard NAME: message` and the usage on stderr; returns 2. */
export function usageError(spec: Pick<CommandSpec, 'name' | 'usage'>, message: string): number {
  process.stderr.write(`switchyard ${spec.name}: ${message}\n${spec.usage}\n`)
  return 2
}

/**
 * `--workers -1`: node refuses a value that starts with `-` as ambiguous. A value that is not a
 * known short option (`-1`, `-x`) is taken as the value, written `--workers=-1`, so the command
 * can say what is wrong with it; a `--long` word after a string option stays an option.
 */
function attachDashValues(args: string[], options: OptionSpec): string[] {
  const shorts = new Set(Object.values(options).map((o) => (o.short === undefined ? '' : `-${o.short}`)))
  const out: string[] = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (a === '--') return [...out, ...args.slice(i)]
    const next = args[i + 1]
    const takesValue = a.startsWith('--') && !a.includes('=') && options[a.slice(2)]?.type === 'string'
    if (takesValue && next !== undefined && /^-[^-]/.test(next) && !shorts.has(next)) {
      out.push(`${a}=${next}`)
      i++
    } else out.push(a)
  }
  return out
}

/** node's messages are long and speak of `--` escapes; say what was wrong in a few words. */
function parseErrorMessage(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  const option = /'(-[^' ]+)/.exec(e.message)?.[1]
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${option ?? e.message}`
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return /does not take an argument/.test(e.message) ? `${option} takes no value` : `${option} needs a value`
    default:
      if (e instanceof Error) return e.message.split('\n')[0] ?? e.message
      throw err
  }
}

/** A string option's value (`parseArgs` types string options as string | boolean). */
export function stringValue(parsed: Parsed, name: string): string | undefined {
  const v = parsed.values[name]
  return typeof v === 'string' ? v : undefined
}
