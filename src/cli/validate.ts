/**
 * `switchyard validate FILE`: exit 0 and `ok` on stdout, or exit 1 and every problem on
 * stderr, one per line, path first (SPEC §8). Exit 2 for a usage error.
 */
import { loadConfigFile } from '../config/load.js'
import { formatProblem } from '../errors.js'

const USAGE = 'usage: switchyard validate FILE\n'

export async function validate(args: string[]): Promise<number> {
  const [file, ...extra] = args
  if (file === undefined || file === '' || extra.length > 0 || file.startsWith('-')) {
    process.stderr.write(USAGE)
    return 2
  }
  const { problems } = await loadConfigFile(file)
  if (problems.length === 0) {
    process.stdout.write('ok\n')
    return 0
  }
  process.stderr.write(problems.map((p) => formatProblem(p) + '\n').join(''))
  return 1
}
