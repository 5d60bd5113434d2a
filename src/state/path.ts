/** Where a problem is, as users read it: `routes[0].split.v3`. */
export type PathSegment = string | number

/**
 * `['routes', 0, 'split', 'v3']` → `routes[0].split.v3`. Keys that would be ambiguous in
 * dotted form (dots, spaces, ...) are bracketed and quoted: `upstreams["v1.2"]`.
 */
export function formatPath(segments: readonly PathSegment[]): string {
  let out = ''
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`
    else if (/^[A-Za-z0-9_-]+$/.test(s)) out += out === '' ? s : `.${s}`
    else out += `[${JSON.stringify(s)}]`
  }
  return out
}
