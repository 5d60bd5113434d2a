/**
 * The regexes of rule matches (`{regex: "..."}` on a header, cookie or query value) run on RE2
 * (the `re2js` port: pure JavaScript, linear time), never on V8's backtracking engine. A
 * client sends the value a rule tests, so with a backtracking engine one pattern like
 * `^(a+)+$` and a 30-character header would pin the event loop for seconds, the data plane
 * and the admin API together. RE2 matches in time linear in the value whatever the pattern:
 * a hostile 16 KiB header costs well under a millisecond.
 *
 * What RE2 cannot promise linear time for it does not have: lookahead, lookbehind and
 * backreferences are refused (at validation, with the path), and so is a repeat count above
 * 1000. A pattern must also be a valid JavaScript regex, the flavour the config documents.
 *
 * Compiled patterns are kept by pattern text (validation and the table compile of every
 * state read from the store ask again for the same ones), so a pattern is compiled once.
 */
import { RE2JS } from 're2js'

/** Distinct patterns kept compiled; past it the oldest are dropped (tables keep those they use). */
const CACHE_MAX = 10_000

/** A compiled pattern, or why it cannot be used. */
const cache = new Map<string, RE2JS | string>()

function lookup(pattern: string): RE2JS | string {
  let entry = cache.get(pattern)
  if (entry === undefined) {
    entry = compile(pattern)
    if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!)
    cache.set(pattern, entry)
  }
  return entry
}

function compile(pattern: string): RE2JS | string {
  try {
    new RegExp(pattern)
  } catch (err) {
    return `invalid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`
  }
  try {
    return RE2JS.compile(pattern)
  } catch (err) {
    // e.g. "error parsing regexp: invalid or unsupported Perl syntax: `(?=`"
    const why = (err as Error).message.replace(/^error parsing regexp: /, '')
    return `not supported by the linear-time matcher (RE2: no lookahead, lookbehind or backreferences, repeats up to {1000}): ${why}`
  }
}

/** Why `pattern` cannot be a rule regex, or undefined when it can. */
export function regexProblem(pattern: string): string | undefined {
  const entry = lookup(pattern)
  return typeof entry === 'string' ? entry : undefined
}

/** `pattern` as a test of a value (unanchored, like RegExp.test); throws when `regexProblem` has something to say. */
export function regexTest(pattern: string): (value: string) => boolean {
  const entry = lookup(pattern)
  if (typeof entry === 'string') throw new Error(`regex ${JSON.stringify(pattern)}: ${entry}`)
  return (value) => entry.test(value)
}
