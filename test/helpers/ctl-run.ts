/** `node dist/cli.js ctl ...args` as a child process, for the ctl tests. */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))

export interface Run {
  code: number
  stdout: string
  stderr: string
}

/** The env never inherits SWITCHYARD_ADMIN_* from the outer shell. */
export function ctl(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = { ...process.env }
  delete base['SWITCHYARD_ADMIN_URL']
  delete base['SWITCHYARD_ADMIN_TOKEN']
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'ctl', ...args], { env: { ...base, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1
      resolve({ code, stdout, stderr })
    })
  })
}
