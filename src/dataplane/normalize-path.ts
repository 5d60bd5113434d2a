/**
 * Dot-segment removal for request paths (RFC 3986 §5.2.4, as Envoy's `normalize_path` and
 * NGINX's location matching do), so that a route by path prefix cannot be sidestepped with
 * `/public/../internal` and `/../../etc/passwd` never reaches an upstream as sent.
 */

const SLASH = 47 // /
const DOT = 46 // .
const PERCENT = 37 // %
const QUERY = 63 // ?
const HASH = 35 // #

/**
 * How many dots the segment `path[start, end)` is made of when it is a dot segment: 1 for `.`,
 * 2 for `..`, else 0. A dot may be percent-encoded (`%2e` or `%2E`, RFC 3986 §2.3: an encoded
 * unreserved character is the same character), so `%2e%2E` and `.%2e` are `..` too.
 */
function dotSegment(path: string, start: number, end: number): number {
  let dots = 0
  let i = start
  while (i < end) {
    const c = path.charCodeAt(i)
    if (c === DOT) i++
    else if (c === PERCENT && path.charCodeAt(i + 1) === 50 /* 2 */ && (path.charCodeAt(i + 2) | 0x20) === 101 /* e */) i += 3
    else return 0
    if (++dots > 2) return 0
  }
  return i === end ? dots : 0
}

/** End of the path part: the first `?` or `#`, or the length. */
function pathEnd(path: string): number {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c === QUERY || c === HASH) return i
  }
  return path.length
}

/**
 * The request path with dot segments resolved (RFC 3986 §5.2.4 remove_dot_segments) for a
 * path that starts with `/`. Guarantees:
 * - the same string (no allocation) when there is nothing to resolve, which is almost always;
 * - `.`/`..` segments count whether their dots are literal or `%2e`/`%2E`; any other
 *   percent-encoding is left as sent (`%2F` stays `%2F`: it is not a separator);
 * - a path that climbs above the root stays at `/` (`/../../etc/passwd` → `/etc/passwd`);
 * - empty segments (`//`) are kept, and the query (from the first `?`) is kept as is.
 * A path that does not start with `/` (`*`, an authority) is returned unchanged.
 */
export function normalizePath(path: string): string {
  if (path.charCodeAt(0) !== SLASH) return path
  // The cheap scan: a dot segment always starts right after a `/` with `.` or `%`.
  const n = path.length
  for (let i = 0; i < n; i++) {
    const c = path.charCodeAt(i)
    if (c === QUERY || c === HASH) return path
    if (c !== SLASH) continue
    const next = path.charCodeAt(i + 1)
    if (next !== DOT && next !== PERCENT) continue
    let end = i + 1
    while (end < n) {
      const e = path.charCodeAt(end)
      if (e === SLASH || e === QUERY || e === HASH) break
      end++
    }
    if (dotSegment(path, i + 1, end) > 0) return resolve(path)
    i = end - 1
  }
  return path
}

/** The slow path: split into segments and resolve them. */
function resolve(path: string): string {
  const end = pathEnd(path)
  const segments = path.slice(1, end).split('/')
  const out: string[] = []
  const last = segments.length - 1
  for (let i = 0; i <= last; i++) {
    const seg = segments[i]!
    const dots = seg.length > 0 && seg.length <= 6 ? dotSegment(seg, 0, seg.length) : 0
    if (dots === 0) {
      out.push(seg)
      continue
    }
    if (dots === 2) out.pop()
    // A trailing dot segment names the directory it resolves to: `/a/b/..` → `/a/`.
    if (i === last) out.push('')
  }
  return `/${out.join('/')}${path.slice(end)}`
}
