// `npm run lint`: the recommended rules plus two that keep the architecture honest: the data
// plane (the hot path) imports neither the control plane, the stores, rollouts, telemetry,
// fastify nor ioredis, and no module imports itself through a cycle.
import js from '@eslint/js'
import globals from 'globals'
import tseslint from 'typescript-eslint'
import { importX } from 'eslint-plugin-import-x'
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript'

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', 'bench/.out/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: { globals: globals.node },
    plugins: { 'import-x': importX },
    settings: {
      // `./x.js` in TypeScript sources means `./x.ts`: the resolver follows tsconfig's NodeNext rules.
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
      // no-cycle must parse the imported TypeScript files too, not only the one being linted.
      'import-x/extensions': ['.ts', '.js', '.mjs'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      // `_`-prefixed names and rest siblings (`{ omitted, ...rest }`) are deliberately unused.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true, caughtErrors: 'none' },
      ],
      // `catch {}`: a best-effort cleanup whose failure changes nothing.
      'no-empty': ['error', { allowEmptyCatch: true }],
    },
  },
  {
    // The dashboard's page runs in a browser, with uPlot loaded by a script tag before it.
    files: ['ui/**/*.js'],
    languageOptions: { globals: { ...globals.browser, uPlot: 'readonly' } },
  },
  {
    // Tests read JSON answers loosely and match terminal output (ANSI escapes, aligned columns).
    files: ['test/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', 'no-control-regex': 'off', 'no-regex-spaces': 'off' },
  },
  {
    files: ['src/dataplane/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/control', '**/control/**', '**/store', '**/store/**', '**/rollout', '**/rollout/**', '**/telemetry', '**/telemetry/**'],
              // A type is erased at build time: sharing one costs the hot path nothing at run time.
              allowTypeImports: true,
              message: 'the data plane does not load the control plane, stores, rollouts or telemetry (README "Design notes")',
            },
            {
              group: ['fastify', 'fastify/**', '@fastify/*', 'ioredis', 'ioredis/**'],
              message: 'the data plane imports neither fastify nor ioredis',
            },
          ],
        },
      ],
    },
  },
)
