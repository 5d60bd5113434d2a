// `npm run lint`: the recommended rules, no import cycles, and folder zones
// (import-x/no-restricted-paths) that keep the layers honest, so a shortcut import fails here
// rather than in a profile or a memory graph:
// - state/ is the bottom layer (the resource model everyone shares): packages and state/ only,
//   so it never drags a subsystem into whoever imports it.
// - dataplane/ (the hot path) loads no control plane, store, rollout, telemetry or supervisor
//   code, not even types (the zone rule cannot tell type imports apart), and neither fastify nor
//   ioredis: whatever it loads is paid for in every worker's memory and start.
// - store/ and config/ sit under the control plane: a store that reached into control/,
//   rollout/ or dataplane/, or a config loader that reached into those or the stores, would be
//   a cycle waiting to happen. store/ may use telemetry's types (the samples it keeps), not its code.
// - supervisor/ (process lifecycle) reaches the app only through app.ts, never control/,
//   dataplane/ or rollout/ directly; it does load store/ (the primary holds the memory store
//   and serves it to workers over IPC).
// - metrics/ reads the rollout records from the state, without loading the rollout code.
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
      'import-x/no-restricted-paths': [
        'error',
        {
          basePath: import.meta.dirname,
          zones: [
            {
              target: 'src/state',
              from: 'src',
              except: ['./state'],
              message: 'state/ is the bottom layer: it imports only packages and state/ (README "Design notes")',
            },
            {
              target: 'src/dataplane',
              from: ['src/control', 'src/store', 'src/rollout', 'src/telemetry', 'src/supervisor'],
              message: 'the data plane does not load the control plane, stores, rollouts, telemetry or the supervisor (README "Design notes")',
            },
            {
              target: 'src/store',
              from: ['src/control', 'src/rollout', 'src/dataplane'],
              message: 'the stores sit under the control plane, rollouts and the data plane (README "Design notes")',
            },
            {
              target: 'src/config',
              from: ['src/store', 'src/control', 'src/rollout', 'src/dataplane'],
              message: 'config/ sits under the stores, the control plane, rollouts and the data plane (README "Design notes")',
            },
            {
              target: 'src/supervisor',
              from: ['src/control', 'src/dataplane', 'src/rollout'],
              message: 'the supervisor reaches the instance through app.ts only (README "Design notes")',
            },
            {
              target: 'src/metrics',
              from: 'src/rollout',
              message: 'metrics read rollout records from the state, not through the rollout code (README "Design notes")',
            },
          ],
        },
      ],
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
        { patterns: [{ group: ['fastify', 'fastify/**', '@fastify/*', 'ioredis', 'ioredis/**'], message: 'the data plane imports neither fastify nor ioredis' }] },
      ],
    },
  },
  {
    files: ['src/store/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/telemetry', '**/telemetry/**'],
              // A type is erased at build time: a store keeps telemetry samples without loading their code.
              allowTypeImports: true,
              message: 'the stores use telemetry types only, not its code (README "Design notes")',
            },
          ],
        },
      ],
    },
  },
)
