/**
 * Readers for the packaging files (Dockerfile, .dockerignore, docker-compose.yml, the
 * Kubernetes manifests), so test/packaging.test.ts can hold them against the code.
 */
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse, parseAllDocuments } from 'yaml'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export function readText(path: string): string {
  return readFileSync(join(ROOT, path), 'utf8')
}

export interface Instruction {
  /** upper case: FROM, COPY, RUN, ... */
  op: string
  /** the rest of the (joined) line */
  rest: string
}

export interface Stage {
  image: string
  name: string | undefined
  instructions: Instruction[]
}

/** The Dockerfile's stages, line by line: `\` continuations joined, comments and blank lines dropped. */
export function dockerfileStages(text: string): Stage[] {
  const logical: string[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (pending === '' && (line === '' || line.startsWith('#'))) continue
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1).trim() + ' '
      continue
    }
    logical.push(pending + line)
    pending = ''
  }
  const stages: Stage[] = []
  for (const line of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(line)
    if (m === null) continue
    const op = m[1]!.toUpperCase()
    const rest = m[2] ?? ''
    if (op === 'FROM') {
      const [image = '', as, name] = rest.split(/\s+/)
      stages.push({ image, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] })
    } else stages.at(-1)?.instructions.push({ op, rest })
  }
  return stages
}

/** An instruction's exec form (`["node", "x"]`); throws on the shell form, which the image must not use here. */
export function execForm(rest: string): string[] {
  const json = rest.startsWith('[') ? rest : rest.replace(/^(--\S+\s+)*(CMD\s+)?/, '')
  const value: unknown = JSON.parse(json)
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new Error(`not an exec form: ${rest}`)
  return value
}

/** `COPY [--from=x] src... dest` → its flags, sources and destination. */
export function copyArgs(rest: string): { from: string | undefined; sources: string[]; dest: string } {
  const words = rest.split(/\s+/)
  const flags = words.filter((w) => w.startsWith('--'))
  const paths = words.filter((w) => !w.startsWith('--'))
  const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length)
  return { from, sources: paths.slice(0, -1), dest: paths.at(-1) ?? '' }
}

/**
 * Whether .dockerignore lets `path` into the build context. Enough of Docker's rules for an
 * allow-list file: the last pattern that matches decides; `*` matches every top-level entry,
 * `name` the entry and everything under it; `!` re-includes.
 */
export function inBuildContext(dockerignore: string, path: string): boolean {
  let included = true
  for (const raw of dockerignore.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const negated = line.startsWith('!')
    const pattern = (negated ? line.slice(1) : line).replace(/^\.?\//, '').replace(/\/$/, '')
    const matches = pattern === '*' || path === pattern || path.startsWith(pattern + '/')
    if (matches) included = negated
  }
  return included
}

export function yamlFile(path: string): any {
  return parse(readText(path))
}

/** Every document of every manifest under `dir`, with the file it came from. */
export function manifests(dir: string): { file: string; doc: any }[] {
  const out: { file: string; doc: any }[] = []
  for (const file of readdirSync(join(ROOT, dir)).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const d of parseAllDocuments(readText(join(dir, file)))) {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`)
      const doc: unknown = d.toJS()
      if (doc !== null) out.push({ file, doc })
    }
  }
  return out
}

/** `${NAME}` / `${NAME:-x}` / `${NAME:?x}` references in a text: the variable names. */
export function envReferences(text: string): string[] {
  return [...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}/g)].map((m) => m[1]!)
}

/** `--name VALUE` or `--name=VALUE` in a command line. */
export function optionValue(args: string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1]
    if (args[i]!.startsWith(`--${name}=`)) return args[i]!.slice(name.length + 3)
  }
  return undefined
}
