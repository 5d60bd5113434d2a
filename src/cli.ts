#!/usr/bin/env node
/**
 * `switchyard <command>`: start | validate | demo | ctl. Each command lives in src/cli/.
 * Exit codes: 0 success, 1 failure (bad config, refused start), 2 usage error.
 */
const USAGE = `usage:
  switchyard start --config FILE [--workers N|auto]
  switchyard validate FILE
  switchyard demo
  switchyard demo-backend VERSION PORT   (one demo API instance, for docker-compose)
  switchyard ctl ...            (see README)`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'start':
      return (await import('./cli/start.js')).start(rest)
    case 'validate':
      return (await import('./cli/validate.js')).validate(rest)
    case 'demo':
      return (await import('./cli/demo.js')).demo(rest)
    case 'ctl':
      return (await import('./cli/ctl.js')).ctl(rest)
    case 'demo-backend':
      return (await import('./cli/demo.js')).demoBackend(rest)
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n')
      return 0
    default:
      process.stderr.write((command ? `unknown command "${command}"\n` : '') + USAGE + '\n')
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Long-running commands (start, demo) resolve only when they are done serving.
    process.exitCode = code
  },
  (err: unknown) => {
    process.stderr.write(`switchyard: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    process.exitCode = 1
  },
)
