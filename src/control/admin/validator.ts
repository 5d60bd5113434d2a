/**
 * The schema compiler of the admin API: TypeBox's own checker (one source of truth with the
 * config loader), with a strict query-string conversion. TypeBox's `Value.Convert`, which the
 * stock compiler uses, reads `1.5` as 1, `true` as 1 and `0x10` as 16 for an integer: a typo
 * in `?waitMs=` would then silently mean something else. Here only a plain decimal number
 * becomes a number, only `true` or `false` a boolean; anything else stays a string and fails the check with a 400.
 */
import type { FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify'
import type { TSchema } from 'typebox'
import { Compile } from 'typebox/compile'

const DECIMAL = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/

function convertQuery(schema: TSchema, value: unknown): unknown {
  const properties = (schema as { properties?: Record<string, { type?: unknown }> }).properties
  if (properties === undefined || typeof value !== 'object' || value === null) return value
  const out: Record<string, unknown> = { ...(value as Record<string, unknown>) }
  for (const [key, v] of Object.entries(out)) {
    const type = Object.hasOwn(properties, key) ? properties[key]?.type : undefined
    if ((type === 'integer' || type === 'number') && typeof v === 'string' && DECIMAL.test(v)) out[key] = Number(v)
    if (type === 'boolean' && (v === 'true' || v === 'false')) out[key] = v === 'true'
  }
  return out
}

/** Routes share schemas (headers, params): compile each once; TypeBox compiles to code, which costs ms. */
const compiled = new WeakMap<TSchema, ReturnType<typeof Compile>>()

export const strictValidatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  let checker = compiled.get(schema)
  if (checker === undefined) compiled.set(schema, (checker = Compile(schema)))
  return (value: unknown) => {
    const converted = httpPart === 'querystring' ? convertQuery(schema, value) : value
    if (checker.Check(converted)) return { value: converted }
    return { error: checker.Errors(converted) as unknown as FastifySchemaValidationError[] }
  }
}
