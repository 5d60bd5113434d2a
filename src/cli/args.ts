/** Tiny argv parsing shared by the commands: `--name value`, `--name=value`, flags, positionals. */
export interface ParsedArgs {
  positional: string[]
  options: Map<string, string>
}

export function parseArgs(args: string[], valueOptions: readonly string[]): ParsedArgs {
  const positional: string[] = []
  const options = new Map<string, string>()
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (!a.startsWith('--')) {
      positional.push(a)
      continue
    }
    const eq = a.indexOf('=')
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq)
    if (eq >= 0) options.set(name, a.slice(eq + 1))
    else if (valueOptions.includes(name)) {
      const v = args[i + 1]
      if (v === undefined) throw new UsageError(`--${name} needs a value`)
      options.set(name, v)
      i++
    } else options.set(name, 'true')
  }
  return { positional, options }
}

export class UsageError extends Error {}
