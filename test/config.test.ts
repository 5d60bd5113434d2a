import { fileURLToPath } from 'node:url'
import { Settings } from 'typebox/system'
import { describe, expect, it } from 'vitest'
import { isLoopbackHost, loadConfigFile, parseConfigText } from '../src/config/load.js'
import { checkConfigShape, formatPath } from '../src/config/shape.js'
import { defaultTargetId, normalizeState, validateState } from '../src/config/validate.js'
import type { ConfigFile } from '../src/config/schema.js'

// `any`: the cases below poke at arbitrary, even invalid, shapes.
type Json = any
/** A valid config; each case below breaks exactly one thing in a fresh copy. */
const base = (): Json => ({
  listen: { host: '0.0.0.0', port: 8080 },
  admin: { host: '127.0.0.1', port: 9901 },
  store: { type: 'memory' },
  upstreams: {
    v1: {
      targets: [{ url: 'http://127.0.0.1:3001' }, { url: 'http://127.0.0.1:3002' }],
      healthCheck: { path: '/healthz' },
    },
    v2: { targets: [{ url: 'http://127.0.0.1:3003' }] },
  },
  routes: [
    {
      name: 'api',
      match: { host: '*', pathPrefix: '/' },
      rules: [{ match: { header: { 'x-v': '2' } }, upstream: 'v2' }],
      split: { v1: 90, v2: 10 },
      sticky: { by: 'header', name: 'x-user-id' },
    },
  ],
  flags: { x: { enabled: true, percent: 25, by: { header: 'x-user-id' } } },
})

function problemsAfter(change: (c: Json) => void, env: NodeJS.ProcessEnv = {}) {
  const c = base()
  change(c)
  return parseConfigText(JSON.stringify(c), env).problems
}

const configDir = (name: string) => fileURLToPath(new URL(`../config/${name}`, import.meta.url))

describe('the base config', () => {
  it('is valid', () => {
    expect(problemsAfter(() => {})).toEqual([])
  })
})

describe('shape errors: one clear problem each, with its path', () => {
  it.each<[string, (c: Json) => void, string, string]>([
    ['unknown property at the root', (c) => (c.foo = 1), '', 'unknown property "foo"'],
    ['unknown property in a target', (c) => (c.upstreams.v1.targets[0].bogus = 1), 'upstreams.v1.targets[0]', 'unknown property "bogus"'],
    ['unknown property in a route match', (c) => (c.routes[0].match.path = '/'), 'routes[0].match', 'unknown property "path"'],
    ['wrong type: port as a string', (c) => (c.listen.port = '8080'), 'listen.port', 'must be an integer'],
    ['wrong type: routes as an object', (c) => (c.routes = {}), 'routes', 'must be an array'],
    ['wrong type: flag enabled', (c) => (c.flags.x.enabled = 'yes'), 'flags.x.enabled', 'must be a boolean'],
    ['negative weight', (c) => (c.routes[0].split.v1 = -1), 'routes[0].split.v1', 'must be >= 0'],
    ['float weight', (c) => (c.routes[0].split.v2 = 1.5), 'routes[0].split.v2', 'must be an integer'],
    ['bad route name', (c) => (c.routes[0].name = 'bad name'), 'routes[0].name', 'invalid name "bad name": must match ^[A-Za-z0-9]'],
    ['route name too long', (c) => (c.routes[0].name = 'a'.repeat(65)), 'routes[0].name', 'invalid name: longer than 64 characters'],
    ['bad upstream name', (c) => (c.upstreams['-v3'] = { targets: [] }), 'upstreams', 'invalid name "-v3"'],
    ['bad name in a split', (c) => (c.routes[0].split['v 3'] = 1), 'routes[0].split', 'invalid name "v 3"'],
    ['bad flag name', (c) => (c.flags['new checkout'] = { enabled: true }), 'flags', 'invalid name "new checkout"'],
    ['bad rule upstream name', (c) => (c.routes[0].rules[0].upstream = 'v/2'), 'routes[0].rules[0].upstream', 'invalid name "v/2"'],
    ['bad target id', (c) => (c.upstreams.v1.targets[0].id = '-x'), 'upstreams.v1.targets[0].id', 'invalid target id "-x"'],
    ['bad header name', (c) => (c.routes[0].rules[0].match.header = { 'x v': '1' }), 'routes[0].rules[0].match.header', 'invalid header name "x v"'],
    ['missing split', (c) => delete c.routes[0].split, 'routes[0].split', 'is required'],
    ['missing upstreams', (c) => delete c.upstreams, 'upstreams', 'is required'],
    ['missing target url', (c) => (c.upstreams.v2.targets[0] = {}), 'upstreams.v2.targets[0].url', 'is required'],
    ['empty split', (c) => (c.routes[0].split = {}), 'routes[0].split', 'must not be empty'],
    ['bad enum: target state', (c) => (c.upstreams.v1.targets[0].state = 'up'), 'upstreams.v1.targets[0].state', 'must be one of "active", "draining", "disabled"'],
    ['bad enum: sticky by', (c) => (c.routes[0].sticky.by = 'user'), 'routes[0].sticky.by', 'must be one of "header", "cookie", "ip"'],
    ['bad enum: balance', (c) => (c.upstreams.v1.balance = 'random'), 'upstreams.v1.balance', 'must be one of "least-request", "p2c"'],
    ['bad store type', (c) => (c.store = { type: 'etcd' }), 'store.type', 'must be one of "memory", "redis"'],
    ['bad redis url', (c) => (c.store = { type: 'redis', url: 'http://x' }), 'store.url', 'must start with redis://'],
    ['unknown property in the redis store', (c) => (c.store = { type: 'redis', host: 'x' }), 'store', 'unknown property "host"'],
    ['port too large', (c) => (c.listen.port = 70000), 'listen.port', 'must be <= 65535'],
    ['negative port', (c) => (c.admin.port = -1), 'admin.port', 'must be >= 0'],
    ['percent over 100', (c) => (c.flags.x.percent = 101), 'flags.x.percent', 'must be <= 100'],
    ['health check interval too short', (c) => (c.upstreams.v1.healthCheck.intervalMs = 10), 'upstreams.v1.healthCheck.intervalMs', 'must be >= 50'],
    ['health check path', (c) => (c.upstreams.v1.healthCheck.path = 'healthz'), 'upstreams.v1.healthCheck.path', 'must start with "/"'],
    ['path prefix', (c) => (c.routes[0].match.pathPrefix = 'api'), 'routes[0].match.pathPrefix', 'must start with "/"'],
    ['lower-case method', (c) => (c.routes[0].match.methods = ['get']), 'routes[0].match.methods[0]', 'HTTP method in upper case'],
    ['rule value not a string or regex', (c) => (c.routes[0].rules[0].match.header['x-v'] = 2), 'routes[0].rules[0].match.header.x-v', 'must be a string or an object'],
    ['regex not a string', (c) => (c.routes[0].rules[0].match.header['x-v'] = { regex: 1 }), 'routes[0].rules[0].match.header.x-v.regex', 'must be a string'],
    ['empty token', (c) => (c.admin.token = ''), 'admin.token', 'must not be empty'],
  ])('%s', (_name, change, path, message) => {
    expect(problemsAfter(change)).toEqual([{ path, message: expect.stringContaining(message) }])
  })

  it('a document that is not a mapping', () => {
    expect(parseConfigText('hello', {}).problems).toEqual([{ path: '', message: 'must be an object' }])
  })

  it('a route name of 64 characters is fine', () => {
    expect(problemsAfter((c) => (c.routes[0].name = 'a'.repeat(64)))).toEqual([])
  })

  it('reports every problem, beyond TypeBox’s default of 8, and leaves its setting as it was', () => {
    const before = Settings.Get().maxErrors
    const problems = problemsAfter((c) => {
      c.routes[0].split = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`u${i}`, -1]))
    })
    expect(problems.map((p) => p.path)).toEqual(Array.from({ length: 12 }, (_, i) => `routes[0].split.u${i}`))
    expect(Settings.Get().maxErrors).toBe(before)
  })

  it('checkConfigShape alone reports several problems, no duplicates and no noise', () => {
    const c = base()
    c.foo = 1
    c.upstreams.v1.targets[0].state = 'up'
    c.routes[0].split.v1 = -1
    expect(checkConfigShape(c)).toEqual([
      { path: '', message: 'unknown property "foo"' },
      { path: 'upstreams.v1.targets[0].state', message: 'must be one of "active", "draining", "disabled"' },
      { path: 'routes[0].split.v1', message: 'must be >= 0' },
    ])
  })
})

describe('semantic errors (validateState and the loader’s cross-checks)', () => {
  const route = (extra: Json) => ({ name: 'other', split: { v1: 1 }, match: { pathPrefix: '/other' }, ...extra })

  it.each<[string, (c: Json) => void, string, string]>([
    // target urls
    ['https url with a path', (c) => (c.upstreams.v1.targets[0].url = 'https://127.0.0.1:3001/x'), 'upstreams.v1.targets[0].url', 'must not have a path ("/x")'],
    ['unreadable tls.ca', (c) => (c.upstreams.v1.tls = { ca: '/nonexistent/ca.pem' }), 'upstreams.v1.tls.ca', '/nonexistent/ca.pem: cannot read: ENOENT'],
    ['tls beside discovery', (c) => Object.assign(c.upstreams.v1, { targets: undefined, discovery: { dns: { name: 'api.internal', port: 80 } }, tls: { servername: 'api' } }), 'upstreams.v1.tls', 'cannot be used with discovery: discovered targets are http://'],
    ['other scheme', (c) => (c.upstreams.v1.targets[0].url = 'ftp://127.0.0.1:3001'), 'upstreams.v1.targets[0].url', 'must be an absolute http:// or https:// URL'],
    ['no scheme', (c) => (c.upstreams.v1.targets[0].url = '127.0.0.1:3001'), 'upstreams.v1.targets[0].url', 'must be an absolute http:// or https:// URL'],
    ['http: without //', (c) => (c.upstreams.v1.targets[0].url = 'http:127.0.0.1:3001'), 'upstreams.v1.targets[0].url', 'must be an absolute http:// or https:// URL'],
    ['not a url', (c) => (c.upstreams.v1.targets[0].url = 'not a url'), 'upstreams.v1.targets[0].url', 'invalid URL "not a url"'],
    ['url with a path', (c) => (c.upstreams.v1.targets[0].url = 'http://127.0.0.1:3001/api'), 'upstreams.v1.targets[0].url', 'must not have a path ("/api")'],
    ['url with a query', (c) => (c.upstreams.v1.targets[0].url = 'http://127.0.0.1:3001/?a=1'), 'upstreams.v1.targets[0].url', 'must not have a query'],
    ['url with credentials', (c) => (c.upstreams.v1.targets[0].url = 'http://u:p@127.0.0.1:3001'), 'upstreams.v1.targets[0].url', 'must not contain credentials'],
    ['url with port 0', (c) => (c.upstreams.v1.targets[0].url = 'http://127.0.0.1:0'), 'upstreams.v1.targets[0].url', 'port must be between 1 and 65535'],
    // target ids
    ['duplicate default id', (c) => (c.upstreams.v1.targets[1].url = 'http://127.0.0.1:3001'), 'upstreams.v1.targets[1].id', 'duplicate id "127.0.0.1:3001"'],
    ['explicit id equal to a default id', (c) => (c.upstreams.v1.targets[1].id = '127.0.0.1:3001'), 'upstreams.v1.targets[1].id', 'duplicate id "127.0.0.1:3001"'],
    [
      'default port is 80',
      (c) => (c.upstreams.v1.targets = [{ url: 'http://backend' }, { url: 'http://backend:80' }]),
      'upstreams.v1.targets[1].id',
      'duplicate id "backend:80"',
    ],
    ['default id not a valid target id', (c) => (c.upstreams.v2.targets[0].url = 'http://[::1]:3003'), 'upstreams.v2.targets[0].id', 'default id "[::1]:3003" (host:port) is not a valid target id'],
    ['health check timeout not below interval', (c) => (c.upstreams.v1.healthCheck.timeoutMs = 2000), 'upstreams.v1.healthCheck.timeoutMs', 'must be less than intervalMs (2000)'],
    // routes
    ['duplicate route name', (c) => c.routes.push(route({ name: 'api' })), 'routes[1].name', 'duplicate route "api"'],
    ['same match as an earlier route', (c) => c.routes.push(route({ match: undefined })), 'routes[1].match', 'same match as routes[0] ("api")'],
    [
      'same methods in another order',
      (c) => {
        c.routes[0].match.methods = ['GET', 'POST']
        c.routes.push(route({ match: { host: '*', pathPrefix: '/', methods: ['POST', 'GET', 'GET'] } }))
      },
      'routes[1].match',
      'same match as routes[0] ("api")',
    ],
    ['split names an unknown upstream', (c) => (c.routes[0].split.v3 = 5), 'routes[0].split.v3', 'unknown upstream "v3"'],
    ['split all zero', (c) => (c.routes[0].split = { v1: 0, v2: 0 }), 'routes[0].split', 'weights must not all be 0'],
    ['rule names an unknown upstream', (c) => c.routes[0].rules.push({ match: { query: { v: '9' } }, upstream: 'v9' }), 'routes[0].rules[1].upstream', 'unknown upstream "v9"'],
    ['header regex does not compile', (c) => (c.routes[0].rules[0].match.header['x-v'] = { regex: '(' }), 'routes[0].rules[0].match.header.x-v.regex', 'invalid regular expression: '],
    ['cookie regex does not compile', (c) => (c.routes[0].rules[0].match = { cookie: { canary: { regex: '[a-' } } }), 'routes[0].rules[0].match.cookie.canary.regex', 'invalid regular expression: '],
    ['header named twice in two cases', (c) => (c.routes[0].rules[0].match.header['X-V'] = '3'), 'routes[0].rules[0].match.header.X-V', 'duplicate header'],
    ['sticky by header without a name', (c) => (c.routes[0].sticky = { by: 'header' }), 'routes[0].sticky.name', 'is required when by is "header"'],
    ['sticky by cookie without a name', (c) => (c.routes[0].sticky = { by: 'cookie' }), 'routes[0].sticky.name', 'is required when by is "cookie"'],
    // flags
    ['flag percent without by', (c) => delete c.flags.x.by, 'flags.x.by', 'is required when percent is below 100'],
    ['flag by with two keys', (c) => (c.flags.x.by = { header: 'x-user-id', ip: true }), 'flags.x.by', 'must name exactly one of header, cookie, ip'],
    ['flag by with no key', (c) => (c.flags.x.by = {}), 'flags.x.by', 'must name exactly one of header, cookie, ip'],
    // cross-checks of the static part
    ['admin on a public host without a token', (c) => (c.admin.host = '0.0.0.0'), 'admin.host', 'binding admin to a non-loopback host requires admin.token or admin.tokens'],
    ['admin on a public host with empty tokens', (c) => Object.assign(c.admin, { host: '10.0.0.1', tokens: {} }), 'admin.host', 'requires admin.token or admin.tokens'],
    ['both token and tokens', (c) => Object.assign(c.admin, { token: 't', tokens: { ci: 'u' } }), 'admin', 'set either admin.token or admin.tokens, not both'],
    ['listen port equals admin port', (c) => (c.admin.port = 8080), 'admin.port', 'same port as listen.port (8080)'],
    ['default ports clash', (c) => Object.assign(c, { listen: { port: 9901 }, admin: {} }), 'admin.port', 'same port as listen.port (9901)'],
  ])('%s', (_name, change, path, message) => {
    expect(problemsAfter(change)).toEqual([{ path, message: expect.stringContaining(message) }])
  })

  it.each<[string, (c: Json) => void]>([
    ['sticky by ip with a name (ignored)', (c) => (c.routes[0].sticky = { by: 'ip', name: 'x' })],
    ['sticky by ip without a name', (c) => (c.routes[0].sticky = { by: 'ip' })],
    ['flag at 100 % without by', (c) => (c.flags.x = { enabled: true, percent: 100 })],
    ['flag without percent', (c) => (c.flags.x = { enabled: false })],
    ['flag by ip', (c) => (c.flags.x.by = { ip: true })],
    ['a url with a trailing slash', (c) => (c.upstreams.v1.targets[0].url = 'http://127.0.0.1:3001/')],
    ['an explicit id for an IPv6 target', (c) => (c.upstreams.v2.targets[0] = { url: 'http://[::1]:3003', id: 'v2-a' })],
    ['a weight of 0 next to a positive one', (c) => (c.routes[0].split = { v1: 0, v2: 1 })],
    ['routes that differ by methods', (c) => c.routes.push(route({ match: { pathPrefix: '/', methods: ['GET'] } }))],
    ['routes that differ by host', (c) => c.routes.push(route({ match: { host: 'api.example.com', pathPrefix: '/' } }))],
    ['admin on a public host with a token', (c) => Object.assign(c.admin, { host: '0.0.0.0', token: 't'.repeat(16) })],
    ['admin on a public host with named tokens', (c) => Object.assign(c.admin, { host: '::', tokens: { ci: 'a'.repeat(16), ops: 'b'.repeat(16) } })],
    ['admin on localhost without a token', (c) => (c.admin.host = 'localhost')],
    ['admin on ::1 without a token', (c) => (c.admin.host = '::1')],
    ['both ports 0', (c) => ((c.listen.port = 0), (c.admin.port = 0))],
    ['same port on two different addresses', (c) => ((c.listen = { host: '10.0.0.1', port: 9901 }), (c.admin.port = 9901))],
    // the default timeout (1 s) shrinks to half a shorter interval
    ['a health check every 500 ms without a timeout', (c) => (c.upstreams.v1.healthCheck = { path: '/healthz', intervalMs: 500 })],
  ])('accepts %s', (_name, change) => {
    expect(problemsAfter(change)).toEqual([])
  })

  it('validateState accepts a normalized State as well as a config', () => {
    const { config } = parseConfigText(JSON.stringify(base()), {})
    expect(validateState(normalizeState(config))).toEqual([])
  })

  it('semantic checks run beside shape checks: every problem in one run', () => {
    const problems = problemsAfter((c) => ((c.routes[0].split.v3 = 1), (c.listen.port = 'x')))
    expect(problems).toEqual([
      { path: 'listen.port', message: 'must be an integer' },
      { path: 'routes[0].split.v3', message: 'unknown upstream "v3"' },
    ])
  })
})

describe('shape and semantic problems together', () => {
  it.each<[string, (c: Json) => void, { path: string; message: string }[]]>([
    [
      'a negative weight beside an unknown upstream',
      (c) => (c.routes[0].split = { v1: -1, v3: 10 }),
      [
        { path: 'routes[0].split.v1', message: 'must be >= 0' },
        { path: 'routes[0].split.v3', message: 'unknown upstream "v3"' },
      ],
    ],
    [
      'no echo at the same path: a negative weight for an unknown upstream',
      (c) => (c.routes[0].split = { v1: 1, v9: -1 }),
      [{ path: 'routes[0].split.v9', message: 'must be >= 0' }],
    ],
    [
      'a malformed weight does not make the others "all 0"',
      (c) => (c.routes[0].split = { v1: 'x', v2: 0 }),
      [{ path: 'routes[0].split.v1', message: 'must be an integer' }],
    ],
    [
      'a bad interval is not compared with the timeout',
      (c) => (c.upstreams.v1.healthCheck.intervalMs = 10),
      [{ path: 'upstreams.v1.healthCheck.intervalMs', message: 'must be >= 50' }],
    ],
    [
      'a malformed upstreams map: references are not judged against it',
      (c) => ((c.upstreams = []), c.routes.push({ name: 'api', split: { v1: 1 }, match: { pathPrefix: '/b' } })),
      [
        { path: 'upstreams', message: 'must be an object' },
        { path: 'routes[1].name', message: 'duplicate route "api"' },
      ],
    ],
    [
      'a malformed target next to a duplicate id',
      (c) => (c.upstreams.v1.targets = [{ url: 5 }, { url: 'http://a:1' }, { url: 'http://a:1' }]),
      [
        { path: 'upstreams.v1.targets[0].url', message: 'must be a string' },
        { path: 'upstreams.v1.targets[2].id', message: 'duplicate id "a:1" (same as targets[1])' },
      ],
    ],
    [
      'a malformed route beside a bad regex in another',
      (c) => ((c.routes[0].rules[0].match.header['x-v'] = { regex: '(' }), c.routes.push({ name: 'b', match: { pathPrefix: '/b' }, split: 'v1' })),
      [
        { path: 'routes[1].split', message: 'must be an object' },
        { path: 'routes[0].rules[0].match.header.x-v.regex', message: expect.stringContaining('invalid regular expression') },
      ],
    ],
    [
      'an unset variable beside a semantic problem elsewhere',
      (c) => ((c.upstreams.v2.targets[0].url = 'http://${V2_HOST}:3003'), (c.routes[0].split.v3 = 1)),
      [
        { path: 'upstreams.v2.targets[0].url', message: 'environment variable V2_HOST is not set' },
        { path: 'routes[0].split.v3', message: 'unknown upstream "v3"' },
      ],
    ],
    [
      'malformed static parts are not cross-checked',
      (c) => ((c.admin = { host: 5, port: 'x' }), (c.listen = 'x')),
      [
        { path: 'listen', message: 'must be an object' },
        { path: 'admin.host', message: 'must be a string' },
        { path: 'admin.port', message: 'must be an integer' },
      ],
    ],
  ])('%s', (_name, change, expected) => {
    expect(problemsAfter(change)).toEqual(expected)
  })

  it('validateState never throws on malformed input', () => {
    const garbage: unknown[] = [
      null,
      1,
      'x',
      [],
      { upstreams: 1, routes: 'x', flags: [] },
      { upstreams: { v1: null, v2: { targets: 'x', healthCheck: 1 }, v3: { targets: [null, 1, { url: 5 }, { id: 5 }, { url: 'x', id: {} }] } }, routes: [] },
      {
        upstreams: {},
        routes: [null, 1, { split: [] }, { match: 'x', split: null }, { match: { methods: 'GET', host: 1 } }, { rules: [null, { match: 1, upstream: 2 }, { match: { header: [1], query: { a: null } } }] }, { sticky: 'x' }, { name: {}, sticky: { by: 1 } }],
        flags: { x: null, y: { by: 'x', percent: 'y' }, z: { by: { header: 1, ip: 'yes' } } },
      },
    ]
    for (const g of garbage) expect(() => validateState(g)).not.toThrow()
  })

  it('the loader never throws when any one value of a good config is replaced by a wrong one', () => {
    const paths: (string | number)[][] = []
    const walk = (node: unknown, at: (string | number)[]) => {
      paths.push(at)
      if (typeof node === 'object' && node !== null) for (const [k, v] of Object.entries(node)) walk(v, [...at, Array.isArray(node) ? Number(k) : k])
    }
    walk(base(), [])
    for (const at of paths.slice(1)) {
      for (const wrong of [null, -1, 'x', [], {}, true]) {
        const c = base()
        const parent = at.slice(0, -1).reduce((n, k) => n[k], c)
        parent[at[at.length - 1]!] = wrong
        const { problems } = parseConfigText(JSON.stringify(c), {})
        const keys = problems.map((p) => `${p.path}: ${p.message}`)
        expect(new Set(keys).size, `${at.join('.')} = ${JSON.stringify(wrong)}`).toBe(keys.length)
      }
    }
  })
})

describe('isLoopbackHost', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['::1', true],
    ['[::1]', true],
    ['0:0:0:0:0:0:0:1', true],
    ['::ffff:127.0.0.1', true],
    ['localhost', true],
    ['LOCALHOST', true],
    ['0.0.0.0', false],
    ['::', false],
    ['10.0.0.1', false],
    ['128.0.0.1', false],
    ['example.com', false],
    ['localhost.example.com', false],
  ])('%s → %s', (host, expected) => {
    expect(isLoopbackHost(host)).toBe(expected)
  })
})

describe('defaultTargetId and normalizeState', () => {
  it.each([
    ['http://127.0.0.1:3001', '127.0.0.1:3001'],
    ['http://127.0.0.1', '127.0.0.1:80'],
    ['http://Backend.Local:8080/', 'backend.local:8080'],
  ])('defaultTargetId(%s) = %s', (url, id) => {
    expect(defaultTargetId(url)).toBe(id)
  })

  it('fills in ids and states, lowercases header names, and does not touch its input', () => {
    const c = base()
    c.upstreams.v1.targets[1] = { url: 'http://127.0.0.1:3002', id: 'b', state: 'draining' }
    c.routes[0].rules = [{ match: { header: { 'X-Api-Version': '2' }, cookie: { Canary: 'on' } }, upstream: 'v2' }]
    const input = structuredClone(c)
    const state = normalizeState(c as ConfigFile)
    expect(state.upstreams['v1']?.targets).toEqual([
      { id: '127.0.0.1:3001', url: 'http://127.0.0.1:3001', state: 'active' },
      { id: 'b', url: 'http://127.0.0.1:3002', state: 'draining' },
    ])
    expect(state.upstreams['v1']?.healthCheck).toEqual({ path: '/healthz' })
    // Cookie names are case-sensitive (RFC 6265), so they keep their case.
    expect(state.routes[0]?.rules?.[0]?.match).toEqual({ header: { 'x-api-version': '2' }, cookie: { Canary: 'on' } })
    expect(state.flags).toEqual(c.flags)
    expect(state.flags).not.toBe(c.flags)
    expect(c).toEqual(input)
  })

  it('formatPath quotes keys that are not plain', () => {
    expect(formatPath(['upstreams', 'v1.2', 'targets', 0, 'url'])).toBe('upstreams["v1.2"].targets[0].url')
    expect(formatPath(['routes', 0, 'rules', 1, 'match', 'header', 'x-v', 'regex'])).toBe('routes[0].rules[1].match.header.x-v.regex')
  })
})

describe('environment variables', () => {
  const withToken = (token: string) => `upstreams: {}\nroutes: []\nadmin:\n  token: ${JSON.stringify(token)}\n`

  it('substitutes a set variable', () => {
    const { config, problems } = parseConfigText(withToken('${SWITCHYARD_ADMIN_TOKEN}'), { SWITCHYARD_ADMIN_TOKEN: 's3cret' })
    expect(problems).toEqual([])
    expect(config.admin?.token).toBe('s3cret')
  })

  it('reports an unset variable at the path of its value, and nothing else about it', () => {
    const { problems } = parseConfigText(withToken('${SWITCHYARD_ADMIN_TOKEN}'), {})
    expect(problems).toEqual([{ path: 'admin.token', message: 'environment variable SWITCHYARD_ADMIN_TOKEN is not set' }])
  })

  it('reports an unset variable inside a target url without a URL error', () => {
    const c = base()
    c.upstreams.v2.targets[0].url = 'http://${V2_HOST}:3003'
    expect(parseConfigText(JSON.stringify(c), {}).problems).toEqual([
      { path: 'upstreams.v2.targets[0].url', message: 'environment variable V2_HOST is not set' },
    ])
    const ok = parseConfigText(JSON.stringify(c), { V2_HOST: '10.1.2.3' })
    expect(ok.problems).toEqual([])
    expect(ok.config.upstreams['v2']?.targets?.[0]?.url).toBe('http://10.1.2.3:3003')
  })

  it.each<[string, NodeJS.ProcessEnv, string]>([
    ['${T:-dev-token}', {}, 'dev-token'],
    ['${T:-dev-token}', { T: '' }, 'dev-token'],
    ['${T:-dev-token}', { T: 'real' }, 'real'],
    ['${T:-}x', {}, 'x'],
    ['a-${T}-b-${U}', { T: '1', U: '2' }, 'a-1-b-2'],
    ['$${T}', { T: 'no' }, '${T}'],
    ['${T}', { T: '${U}', U: 'twice' }, '${U}'], // a value is never substituted again
  ])('%s with %j → %s', (template, env, expected) => {
    const { config, problems } = parseConfigText(withToken(template), env)
    expect(problems).toEqual([])
    expect(config.admin?.token).toBe(expected)
  })

  it('reports a malformed reference', () => {
    expect(parseConfigText(withToken('${1BAD}'), {}).problems).toEqual([
      { path: 'admin.token', message: 'invalid variable reference "${1BAD}"' },
    ])
  })

  it('a value cannot inject YAML', () => {
    const evil = 'x\n  foo: bar\nlisten: { port: 1 }'
    const { config, problems } = parseConfigText(withToken('${SWITCHYARD_ADMIN_TOKEN}'), { SWITCHYARD_ADMIN_TOKEN: evil })
    expect(problems).toEqual([])
    expect(config.admin).toEqual({ token: evil })
    expect(config.listen).toBeUndefined()
  })

  it('a whole ${VAR} becomes a number where the schema wants one, and stays a string elsewhere', () => {
    const text = 'listen: { port: "${PORT}" }\nadmin: { port: "${ADMIN_PORT:-9902}", token: "${TOKEN}" }\nupstreams: {}\nroutes: []\n'
    const { config, problems } = parseConfigText(text, { PORT: '8081', TOKEN: '12345' })
    expect(problems).toEqual([])
    expect(config.listen?.port).toBe(8081)
    expect(config.admin?.port).toBe(9902)
    expect(config.admin?.token).toBe('12345')
  })

  it('a ${VAR} that is not a number where one is wanted is a type problem', () => {
    const { problems } = parseConfigText('listen: { port: "${PORT}" }\nupstreams: {}\nroutes: []\n', { PORT: 'eighty' })
    expect(problems).toEqual([{ path: 'listen.port', message: 'must be an integer' }])
  })
})

describe('YAML and JSON', () => {
  const yamlText = `
upstreams:
  v1:
    targets:
      - url: http://127.0.0.1:3001
routes:
  - name: api
    split: { v1: 1 }
`
  const jsonText = JSON.stringify({ upstreams: { v1: { targets: [{ url: 'http://127.0.0.1:3001' }] } }, routes: [{ name: 'api', split: { v1: 1 } }] }, null, '\t')

  it('reads YAML and JSON (even tab-indented) to the same config', () => {
    const fromYaml = parseConfigText(yamlText, {})
    const fromJson = parseConfigText(jsonText, {})
    expect(fromYaml.problems).toEqual([])
    expect(fromJson.problems).toEqual([])
    expect(fromJson.config).toEqual(fromYaml.config)
  })

  it.each([
    ['YAML: unclosed flow sequence', 'upstreams: {}\nroutes: [1, 2\nflags: {}\n', 'line 3, column 1'],
    ['JSON: stray bracket', '{\n  "upstreams": {},\n  "routes": [}\n}\n', 'line 3, column 14'],
    ['duplicate key', 'upstreams: {}\nroutes: []\nroutes: []\n', 'line 3, column 1'],
  ])('%s is a syntax problem with its position', (_name, text, where) => {
    const { problems } = parseConfigText(text, { T: 'x' })
    expect(problems).toHaveLength(1)
    expect(problems[0]?.path).toBe('')
    expect(problems[0]?.message).toMatch(/^syntax error at line \d+, column \d+: /)
    expect(problems[0]?.message).toContain(where)
  })

  it('${VAR} unquoted inside flow mappings and sequences, as in `admin: { token: ${TOKEN} }`', () => {
    const text = [
      'listen: { host: 127.0.0.1, port: ${PORT} }',
      'admin:  { host: 127.0.0.1, port: 9901, token: ${SWITCHYARD_ADMIN_TOKEN} }',
      'store:  { type: redis, url: "redis://${REDIS_HOST:-127.0.0.1}:6379", prefix: ${PREFIX:-sy} }',
      'upstreams:',
      '  v1: { targets: [ { url: ${V1_URL} }, { url: "http://10.0.0.2:80" } ] }',
      'routes: [ { name: api, split: { v1: 100 } } ]',
      '',
    ].join('\n')
    const { config, problems } = parseConfigText(text, { PORT: '8080', SWITCHYARD_ADMIN_TOKEN: 's3cr:et}{', V1_URL: 'http://10.0.0.1:80' })
    expect(problems).toEqual([])
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 8080 })
    // the value is one string, whatever YAML characters it holds
    expect(config.admin?.token).toBe('s3cr:et}{')
    expect(config.store).toEqual({ type: 'redis', url: 'redis://127.0.0.1:6379', prefix: 'sy' })
    expect(config.upstreams['v1']?.targets?.map((t) => t.url)).toEqual(['http://10.0.0.1:80', 'http://10.0.0.2:80'])
  })

  it('an unset ${VAR} inside a flow mapping is reported at its path; a syntax error keeps its line', () => {
    expect(parseConfigText('admin: { host: 127.0.0.1, token: ${NOPE} }\nupstreams: {}\nroutes: []\n', {}).problems).toEqual([
      { path: 'admin.token', message: 'environment variable NOPE is not set' },
    ])
    const { problems } = parseConfigText('admin: { token: ${T} }\nroutes: [1, 2\n', { T: 'x' })
    expect(problems[0]?.message).toMatch(/^syntax error at line 3, column 1: /)
  })

  it('an alias to an unknown anchor is a problem, not a crash', () => {
    expect(parseConfigText('upstreams: *nope\nroutes: []\n', {}).problems).toEqual([
      { path: '', message: expect.stringContaining('invalid YAML: ') },
    ])
  })
})

describe('loadConfigFile', () => {
  it.each(['example.yaml', 'demo.yaml'])('config/%s is valid', async (name) => {
    const { problems } = await loadConfigFile(configDir(name), {})
    expect(problems).toEqual([])
  })

  it('example.yaml takes the admin token from the environment, with a dev default', async () => {
    expect((await loadConfigFile(configDir('example.yaml'), {})).config.admin?.token).toBe('dev-token')
    const { config } = await loadConfigFile(configDir('example.yaml'), { SWITCHYARD_ADMIN_TOKEN: 'prod' })
    expect(config.admin?.token).toBe('prod')
  })

  it('demo.yaml has what `npm start` promises', async () => {
    const { config } = await loadConfigFile(configDir('demo.yaml'), {})
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 8080 })
    expect(config.admin).toEqual({ host: '127.0.0.1', port: 9901 })
    expect(Object.keys(config.upstreams)).toEqual(['v1', 'v2'])
    expect(config.routes[0]?.split).toEqual({ v1: 90, v2: 10 })
    expect(config.flags?.['new-checkout']).toEqual({ enabled: true, percent: 25, by: { header: 'x-user-id' } })
  })

  it('an unreadable file is one problem', async () => {
    const { problems } = await loadConfigFile('/nonexistent/switchyard.yaml', {})
    expect(problems).toEqual([{ path: '', message: expect.stringMatching(/^\/nonexistent\/switchyard\.yaml: cannot read: ENOENT/) }])
  })
})
