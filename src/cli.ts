#!/usr/bin/env node
/**
 * `switchyard <command>`: start | validate | demo | demo-backend | ctl. Each command lives in
 * src/cli/ and takes `--help`. Exit codes: 0 success, 1 failure (bad config, refused start,
 * refused API call), 2 usage error (unknown command or option, missing argument).
 */
import { readFileSync } from 'node:fs'
import { relaunchTuned } from './cli/node-tuning.js'
import { unsupportedNode } from './cli/node-version.js'

const USAGE = `usage: switchyard COMMAND [options]
  start --config FILE [--workers N|auto] [--log-level LEVEL]   run the proxy
  validate FILE                                                 check a config file
  demo                                                          the demo (npm start)
  demo-backend VERSION PORT                                     one demo API instance (docker-compose)
  ctl [options] COMMAND ...                                     drive a running proxy through its admin API
  --help, -h                                                    this help; COMMAND --help for a command's
  --version, -v                                                 the version
exit codes: 0 done, 1 failed, 2 usage error`

/**
 * The package's version, read from package.json at run time: it sits one level above both
 * dist/cli.js (an install, `npx switchyard`) and src/cli.ts (a checkout), so it cannot drift.
 */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

async function main(argv: string[]): Promise<number> {
  const tooOld = unsupportedNode(process.versions.node)
  if (tooOld !== null) {
    process.stderr.write(`switchyard: ${tooOld}\n`)
    return 1
  }
  const [command, ...rest] = argv
  // The long-running commands, before anything else is loaded: their memory settings (node-tuning.ts).
  if (command === 'start' || command === 'demo') relaunchTuned()
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
    case '-v':
    case '--version':
    case 'version':
      process.stdout.write(version() + '\n')
      return 0
    default:
      process.stderr.write(`switchyard: ${command ? `unknown command "${command}"` : 'no command given'}\n${USAGE}\n`)
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
