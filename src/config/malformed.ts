/**
 * Lets the semantic check run beside the shape check without echoing it. The loader hands
 * `validateState` a copy of the config in which every value the schema rejected (and every
 * value still holding an unset `${VAR}`) is replaced by MALFORMED; the semantic pass skips
 * values of an unexpected type, so it judges only what is well formed. A bad key (an invalid
 * upstream name in a split) marks its whole entry: the key itself is the malformed value.
 */
import type { RawSchemaError, PathSegment } from './shape.js'

/** Stands in for a value the shape check already reported. */
export const MALFORMED: unique symbol = Symbol('malformed')

/** A deep copy of `raw` with MALFORMED at each rejected place; `raw` is left as it is. */
export function markMalformed(raw: unknown, errors: readonly RawSchemaError[], extra: readonly PathSegment[][]): unknown {
  const root = { value: structuredClone(raw) }
  const mark = (segments: readonly PathSegment[]) => {
    let parent: unknown = root
    let key: PathSegment = 'value'
    for (const s of segments) {
      const node = (parent as Record<PathSegment, unknown>)[key]
      // Already marked above, or the path leads nowhere: nothing left to hide.
      if (typeof node !== 'object' || node === null) return
      parent = node
      key = s
    }
    const container = parent as Record<PathSegment, unknown>
    if (Object.hasOwn(container, key)) container[key] = MALFORMED
  }
  for (const e of errors) {
    // A missing property has no value to hide; an object with unknown keys is itself fine
    // (its bad keys come as `boolean` errors at the key, marked here).
    if (e.keyword === 'required' || e.keyword === 'additionalProperties') continue
    mark(pointerSegments(e.instancePath))
  }
  for (const segments of extra) mark(segments)
  return root.value
}

/** JSON pointer → raw segments (array indices stay strings: they index arrays just the same). */
function pointerSegments(pointer: string): string[] {
  if (pointer === '') return []
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'))
}

/** A plain object (not null, not an array): the one shape the semantic pass reads keys of. */
export function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
