/**
 * The admin API client behind `switchyard ctl`: one fetch per call, the answer parsed as JSON,
 * and the three ways a call ends (an answer, an API error, no answer at all) kept apart so each
 * prints its own message and exit code.
 */

export interface CtlOptions {
  admin: string
  token: string | undefined
  reason: string | undefined
  ifMatch: string | undefined
  waitApplied: string | undefined
  json: boolean
}

export interface Answer {
  status: number
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON answers of many shapes; each command reads what it prints
  body: any
}

/** The admin API answered with an error status (body `{error: {code, message, details}}`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`${status}`)
  }
}

/** The admin API could not be reached at all (refused, DNS, reset...). */
export class UnreachableError extends Error {}

export interface Call {
  method: string
  path: string
  body?: unknown
  /** query parameters; undefined values are left out */
  query?: Record<string, string | undefined>
  /** writes carry the reason, If-Match and waitApplied; reads do not */
  write?: boolean
}

export async function call(opts: CtlOptions, c: Call): Promise<Answer> {
  const url = new URL(opts.admin.replace(/\/+$/, '') + c.path)
  const query = { ...c.query, ...(c.write ? { waitApplied: opts.waitApplied } : {}) }
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v)
  const headers: Record<string, string> = {}
  if (opts.token !== undefined) headers['authorization'] = `Bearer ${opts.token}`
  if (c.write && opts.reason !== undefined) headers['x-switchyard-reason'] = opts.reason
  if (c.write && opts.ifMatch !== undefined) headers['if-match'] = opts.ifMatch
  let body: string | undefined
  if (c.body !== undefined) {
    body = JSON.stringify(c.body)
    headers['content-type'] = 'application/json'
  }
  let res: Response
  let text: string
  try {
    res = await fetch(url, { method: c.method, headers, body })
    text = await res.text()
  } catch (err) {
    // undici reports "fetch failed" and puts the useful part (ECONNREFUSED ...) in `cause`.
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err
    throw new UnreachableError(cause instanceof Error ? cause.message : String(cause))
  }
  let parsed: unknown = text
  try {
    parsed = text === '' ? undefined : JSON.parse(text)
  } catch {
    // not JSON (a proxy in between, a wrong port): keep the text so the message shows it
  }
  if (res.status >= 400) throw new ApiError(res.status, parsed)
  return { status: res.status, body: parsed }
}

/** `switchyard ctl: 412 REVISION_MISMATCH: ...` plus one `  path: message` line per detail. */
export function formatApiError(err: ApiError): string {
  const e = (err.body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error
  if (e === undefined || typeof e !== 'object') {
    const raw = typeof err.body === 'string' ? err.body : JSON.stringify(err.body ?? '')
    return `switchyard ctl: ${err.status}: ${raw.slice(0, 500)}\n`
  }
  let out = `switchyard ctl: ${err.status} ${String(e.code)}: ${String(e.message)}\n`
  if (Array.isArray(e.details)) {
    for (const d of e.details as unknown[]) {
      const p = d as { path?: unknown; message?: unknown }
      out += typeof p?.message === 'string' ? `  ${String(p.path ?? '')}: ${p.message}\n` : `  ${JSON.stringify(d)}\n`
    }
  }
  return out
}

/**
 * The line a write prints, and its exit code: `ok: revision 7`, or with the 202 of an
 * expired `waitApplied`, the instances that had not applied it yet (exit 1: the change is
 * committed but not yet in force everywhere, which a pipeline must not mistake for done).
 */
export function writeResult(answer: Answer): { line: string; code: number } {
  const body = answer.body as { revision?: number; applied?: boolean; laggards?: { id: string }[] }
  const line = `ok: revision ${String(body.revision)}`
  if (answer.status === 202 && body.applied === false) {
    const ids = (body.laggards ?? []).map((l) => l.id)
    const which = ids.length > 0 ? `not applied on: ${ids.join(', ')}` : 'not confirmed applied (instance registry unreadable)'
    return { line: `${line} (202: ${which})`, code: 1 }
  }
  return { line, code: 0 }
}
