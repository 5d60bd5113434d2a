/**
 * undici's connection pool alone. `import { Pool } from 'undici'` loads the whole package
 * (fetch, WebSocket, caches, mocks): ~9 MB more RSS per process for nothing the proxy uses.
 * The path is internal to undici 7, whose version package-lock.json pins.
 */
import { createRequire } from 'node:module'
import type { Pool as UndiciPool } from 'undici'

const require = createRequire(import.meta.url)

export const Pool = require('undici/lib/dispatcher/pool.js') as typeof UndiciPool
export type Pool = UndiciPool
