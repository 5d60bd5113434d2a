/**
 * `switchyard validate FILE`: exit 0 and `ok` on stdout, or exit 1 and every problem on
 * stderr, one per line, path first. Exit 2 for a usage error.
 */
import { loadConfigFile } from '../config/load.js'
import { formatProblem } from '../errors.js'
import { parseCommand, usageError, type CommandSpec } from './args.js'

const COMMAND: CommandSpec = {
  name: 'validate',
  usage: 'usage: switchyard validate FILE\n  checks a config file: "ok" and exit 0, or every problem with its path and exit 1',
  options: {},
}

export async function validate(args: string[]): Promise<number> {
  const parsed = parseCommand(args, COMMAND)
  if (typeof parsed === 'number') return parsed
  const [file, ...extra] = parsed.positionals
  if (file === undefined || file === '') return usageError(COMMAND, 'no config file given')
  if (extra.length > 0) return usageError(COMMAND, `unexpected argument ${JSON.stringify(extra[0])}`)
  const { problems } = await loadConfigFile(file)
  if (problems.length === 0) {
    process.stdout.write('ok\n')
    return 0
  }
  process.stderr.write(problems.map((p) => formatProblem(p) + '\n').join(''))
  return 1
}
