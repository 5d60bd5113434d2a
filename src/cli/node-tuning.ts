/**
 * The Node.js settings switchyard's long-running processes (`start`, `demo`) run with. On Node
 * 22 and 24, V8 sizes the young generation from the machine's memory: on a host with a few GiB
 * it grows to 64 MiB per semi-space (Node 20: 16 MiB), and under load the proxy's resident set
 * nearly doubled (measured: ~240 MB after 64-connection load, against ~130 MB on Node 20). A
 * proxy's garbage is short-lived (one request's objects), so a young generation far smaller
 * than that holds it. Each setting was measured on that load (README "Memory"):
 *
 * - `--max-semi-space-size=8` (MiB): a young generation of up to 16 MiB instead of up to 128
 *   MiB. Each scavenge costs about the same whatever the size (it copies the objects of the
 *   requests in flight), so their number, and Node's per-collection work for the GC metric, go
 *   as 1/size: 4 MiB kept ~7 MB less after load but spent about twice the scavenge time
 *   (~2 µs per request instead of ~1); 16 MiB saved little more time and kept ~10 MB more.
 * - `--no-allocation-site-pretenuring`: with a small young generation, V8 sometimes decides that
 *   objects made at a busy allocation site (a request's) survive, allocates them straight in
 *   the old generation, and the old generation balloons until a full collection (about one run
 *   in three: +40-70 MB and 3x the GC time). Request objects do not outlive their request.
 * - `--no-maglev`: V8's mid-tier compiler, new since Node 22, compiles on helper threads whose
 *   malloc'd memory stays with the process (8-10 MB after load); the optimizing compiler still
 *   makes the hot path's code, and no loss of throughput was measured.
 * - `MALLOC_ARENA_MAX=2`, `MALLOC_TRIM_THRESHOLD_=131072`: glibc gives every thread (V8's
 *   compiler and GC helpers, libuv's pool) its own malloc arena and, by default, raises its
 *   trim threshold after large frees, keeping freed memory; two arenas and a fixed 128 KiB
 *   threshold give it back (free memory inside malloc after load: ~20 MB before, 2-5 MB after).
 *
 * Node reads these only when a process starts, so the CLI re-executes itself once with them
 * (`process.execve`: the same process id, stdio and signals; nothing has run yet), unless the
 * process already has them: flags given by the user (on the command line or in NODE_OPTIONS)
 * and the user's own MALLOC_* values win over these. `SWITCHYARD_NODE_TUNING=off` turns it all
 * off. Workers (`--workers`) inherit the flags and the environment from their primary.
 */
export const TUNING_FLAGS = ['--max-semi-space-size=8', '--no-allocation-site-pretenuring', '--no-maglev'] as const
export const TUNING_ENV = { MALLOC_ARENA_MAX: '2', MALLOC_TRIM_THRESHOLD_: '131072' } as const

/** The flag's name: `--max-semi-space-size` of `--max-semi-space-size=8`, with `_` read as `-`. */
function flagName(flag: string): string {
  const name = flag.split('=')[0]!.replaceAll('_', '-')
  return name.startsWith('--no-') ? `--${name.slice(5)}` : name
}

export interface Relaunch {
  /** flags to put before the script */
  flags: string[]
  env: Record<string, string>
}

/**
 * What a process started with `execArgv` and `env` must add to run tuned, or null when it has
 * everything (or the user turned the tuning off).
 */
export function tuningToAdd(execArgv: readonly string[], env: NodeJS.ProcessEnv): Relaunch | null {
  if (env.SWITCHYARD_NODE_TUNING === 'off') return null
  const given = new Set([...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName))
  const flags = TUNING_FLAGS.filter((f) => !given.has(flagName(f)))
  const add: Record<string, string> = {}
  for (const [k, v] of Object.entries(TUNING_ENV)) if (env[k] === undefined) add[k] = v
  // Flags already there and only the environment missing: a process started tuned by someone
  // who chose their own malloc settings (or a platform without glibc); nothing to redo.
  if (flags.length === 0) return null
  return { flags, env: add }
}

/**
 * Re-executes this process with the tuning when it lacks it and the platform can (`process.execve`,
 * Node 22.15+ on POSIX systems); returns only when it does not.
 */
export function relaunchTuned(): void {
  const add = tuningToAdd(process.execArgv, process.env)
  // Windows and IBM i (os400, missing from Node's own platform type) have process.execve, but it throws there.
  const platform: string = process.platform
  if (add === null || process.execve === undefined || platform === 'win32' || platform === 'os400') return
  process.execve(process.execPath, [process.execPath, ...add.flags, ...process.execArgv, ...process.argv.slice(1)], { ...process.env, ...add.env })
}
