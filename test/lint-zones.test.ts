/**
 * The folder zones of eslint.config.js bite: an import across a forbidden boundary is an
 * import-x/no-restricted-paths error, and a legal one is not. Snippets are linted as if they
 * were files in those folders (they need not exist; their imports resolve from there).
 */
import { ESLint } from 'eslint'
import { fileURLToPath } from 'node:url'
import { beforeAll, expect, it } from 'vitest'

const cwd = fileURLToPath(new URL('..', import.meta.url))
const RULE = 'import-x/no-restricted-paths'

let eslint: ESLint
beforeAll(() => {
  eslint = new ESLint({ cwd })
})

/** The zone errors ESLint reports for `code` as the file `filePath`. */
async function zoneErrors(code: string, filePath: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath })
  return result!.messages.filter((m) => m.ruleId === RULE && m.severity === 2).map((m) => m.message)
}

it.each([
  ['the data plane importing the control plane', 'src/dataplane/x.ts', '../control/follower.js'],
  ['state/ importing config/', 'src/state/x.ts', '../config/load.js'],
  ['a store importing the control plane', 'src/store/x.ts', '../control/writer.js'],
])('%s is an error', async (_what, filePath, from) => {
  const errors = await zoneErrors(`import * as m from '${from}'\nexport const used = m\n`, filePath)
  expect(errors).toHaveLength(1)
  expect(errors[0]).toContain(`Unexpected path "${from}" imported in restricted zone.`)
})

it('the data plane importing the state model is not', async () => {
  expect(await zoneErrors(`import * as m from '../state/schema.js'\nexport const used = m\n`, 'src/dataplane/x.ts')).toEqual([])
})
