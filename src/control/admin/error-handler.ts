/**
 * Every error the admin API answers has one shape, `{"error":{"code","message","details"}}`,
 * whoever raised it: our handlers (SwitchyardError), schema validation, the body parser, the
 * router (bad percent-encoding, over-long params, unknown paths) or Node's HTTP parser. Clients
 * and `switchyard ctl` then switch on `code` and never meet fastify's own error shape.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Socket } from 'node:net'
import { ERRORS, SwitchyardError, type ErrorCode } from '../../errors.js'
import { NAME_PATTERN, TARGET_ID_PATTERN } from '../../config/schema.js'
import { schemaProblems } from '../../config/shape.js'
import { IF_MATCH_PATTERN } from './schemas.js'

/** Admin bodies are small JSON documents; 1 MiB leaves room for a large upstream list. */
export const BODY_LIMIT = 1024 * 1024

/**
 * Longest raw route parameter the router accepts. Names are ≤ 64 and target ids ≤ 128
 * characters, ×3 when percent-encoded; longer ones are answered 400 (not fastify's 414).
 */
export const MAX_PARAM_LENGTH = 512

function send(reply: FastifyReply, code: ErrorCode, message?: string, details?: unknown[]): FastifyReply {
  return reply.code(ERRORS[code].status).send(new SwitchyardError(code, message, { details }).toJSON())
}

/** Router-level faults, raised before a route (and its error handler) is chosen. */
export function frameworkErrors(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') send(reply, 'VALIDATION_FAILED', 'a name or id in the path is too long')
  else send(reply, 'VALIDATION_FAILED', 'the path is not validly percent-encoded')
}

/** Malformed HTTP (bad request line, headers too large) never reaches fastify; answer it in our shape too. */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable) {
    socket.destroy()
    return
  }
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW'
  const status = tooLarge ? 431 : 400
  const body = JSON.stringify({
    error: { code: 'VALIDATION_FAILED', message: tooLarge ? 'request headers too large' : 'malformed HTTP request' },
  })
  socket.end(
    `HTTP/1.1 ${status} ${tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
      `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
}

/** Admin wording for these patterns, tried before the translator's (which quotes the regex of a name). */
const PATTERN_MESSAGES: Record<string, string> = {
  [NAME_PATTERN]: `must be a name: a letter or digit, then up to 63 of [A-Za-z0-9_.-]`,
  [TARGET_ID_PATTERN]: `must be a target id: a letter or digit, then up to 127 of [A-Za-z0-9_.:-]`,
  [IF_MATCH_PATTERN]: 'must be a revision: 5 or "5" (weak and list forms are not accepted)',
}

/** Fastify's own error codes we answer with a specific code of ours. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** `:param` matches one path segment, `*` the rest: fastify's route syntax as a regex. */
function patternOf(url: string): RegExp {
  const parts = url.split(/(:[A-Za-z0-9_]+|\*)/).map((p) => (p === '*' ? '.*' : p.startsWith(':') ? '[^/]+' : p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
  return new RegExp(`^${parts.join('')}$`)
}

/**
 * The methods each registered path serves, for the 405 answer: fastify's router only tells
 * that no route matched a method and path, not whether the path exists with other methods.
 */
function methodsByPath(app: FastifyInstance): (path: string) => string[] {
  const routes = new Map<string, { pattern: RegExp; methods: Set<string> }>()
  app.addHook('onRoute', (route) => {
    let entry = routes.get(route.url)
    if (entry === undefined) routes.set(route.url, (entry = { pattern: patternOf(route.url), methods: new Set() }))
    for (const m of [route.method].flat()) entry.methods.add(m.toUpperCase())
  })
  return (path) => {
    const methods = new Set<string>()
    for (const { pattern, methods: ms } of routes.values()) if (pattern.test(path)) for (const m of ms) methods.add(m)
    return [...methods].sort()
  }
}

/**
 * Installs the error handler, the 404/405 handler and the JSON body parser. The parser refuses
 * non-UTF-8 charsets (415) and invalid UTF-8 or JSON (400), and reads an empty body as "no
 * body" so body-less writes (drain, DELETE) work whatever Content-Type a client sends.
 */
export function installErrorHandling(app: FastifyInstance): void {
  const allowed = methodsByPath(app)
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0] ?? ''
    const methods = allowed(path)
    if (methods.length === 0) return send(reply, 'NOT_FOUND', `no route ${req.method} ${path}`)
    reply.header('allow', methods.join(', '))
    return send(reply, 'METHOD_NOT_ALLOWED', `${path} does not support ${req.method}: use ${methods.join(', ')}`, [{ allow: methods }])
  })

  app.setErrorHandler((err: FastifyError | SwitchyardError, req, reply) => {
    if (err instanceof SwitchyardError) return reply.code(err.status).send(err.toJSON())
    if (err.validation) {
      const context = err.validationContext ?? 'request'
      const parts: Record<string, unknown> = { body: req.body, params: req.params, querystring: req.query, headers: req.headers }
      // The schema the errors' paths point into: it tells a record's invalid key from an unknown property.
      const schema = (req.routeOptions.schema as Record<string, unknown> | undefined)?.[context]
      const problems = schemaProblems(err.validation, parts[context], {
        prefix: [context === 'querystring' ? 'query' : context],
        schema,
        hints: PATTERN_MESSAGES,
        keyPaths: true,
      })
      return send(reply, 'VALIDATION_FAILED', problems.map((p) => `${p.path}: ${p.message}`).join('; '), problems)
    }
    const mapped = err.code === undefined ? undefined : FASTIFY_CODES[err.code]
    if (mapped !== undefined) return send(reply, mapped)
    const status = err.statusCode ?? 500
    if (status === 401) return send(reply, 'UNAUTHORIZED')
    if (status === 404) return send(reply, 'NOT_FOUND')
    if (status >= 400 && status < 500) return send(reply, 'VALIDATION_FAILED', err.message)
    // A bug, not a user fault: say nothing about internals in the answer, but leave a trace.
    process.emitWarning(`switchyard admin: ${err.stack ?? err.message}`)
    return send(reply, 'INTERNAL')
  })

  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(req.headers['content-type'] ?? '')?.[1]?.toLowerCase()
    if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
      return done(new SwitchyardError('UNSUPPORTED_MEDIA_TYPE', `charset ${charset} is not supported: send UTF-8 JSON`))
    }
    const buf = body as Buffer
    if (buf.length === 0) return done(null, undefined)
    let text: string
    try {
      text = utf8.decode(buf)
    } catch {
      return done(new SwitchyardError('VALIDATION_FAILED', 'the body is not valid UTF-8'))
    }
    parseJson(req, text, (err, value) => {
      if (err) done(new SwitchyardError('VALIDATION_FAILED', 'the body is not valid JSON'))
      else done(null, value)
    })
  })
}
