/**
 * Dot-segment removal for request paths (RFC 3986 §5.2.4, as Envoy's `normalize_path` and
 * NGINX's location matching do), so that a route by path prefix cannot be sidestepped with
 * `/public/../internal` and `/../../etc/passwd` never reaches an upstream as sent; and the
 * detection of paths a backend may resolve differently from the proxy (`ambiguousPath`).
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

const BACKSLASH = 92 // backslash
const SEMICOLON = 59 // ;

/** The characters `ambiguousPath` stops at; every other one costs a table load. */
const STOP = new Uint8Array(128)
for (const c of [SLASH, PERCENT, BACKSLASH, SEMICOLON, QUERY, HASH]) STOP[c] = 1

/** `%2F` or `%2f` at `i` (a `%`). */
function encodedSlash(path: string, i: number): boolean {
  return path.charCodeAt(i + 1) === 50 /* 2 */ && (path.charCodeAt(i + 2) | 0x20) === 102 /* f */
}

/**
 * True when the path part (before `?` or `#`) holds what a backend may resolve differently
 * from this proxy, which routes on the path with dot segments resolved and `%2F` kept as data:
 * - a backslash, raw or `%5C` (any case): IIS, and servers that follow WHATWG URL parsing,
 *   read it as `/`, so `/public\..\internal` climbs out of `/public`;
 * - a dot segment (`.`, `..`, dots literal or `%2e`) next to an encoded slash (`..%2F`,
 *   `%2e%2e%2f`, `.%2F`, `a%2F..`): a backend that decodes `%2F` before resolving dot segments
 *   climbs where the proxy did not;
 * - a dot segment with path parameters (`..;`, `.;x`): Tomcat and other servlet containers
 *   drop `;...` from a segment and then resolve it, so `/public/..;/internal` is `/internal`.
 * The query is not looked at. One pass over the path, nothing allocated.
 */
export function ambiguousPath(path: string): boolean {
  if (path.charCodeAt(0) !== SLASH) return false
  const n = path.length
  // Start of the current segment (after `/` or `%2F`); -1 inside path parameters (after `;`).
  let seg = 1
  let leftEncoded = false
  for (let i = 1; i < n; i++) {
    const c = path.charCodeAt(i)
    if (c >= 128 || STOP[c] === 0) continue
    if (c === QUERY || c === HASH) return leftEncoded && seg >= 0 && dotSegment(path, seg, i) > 0
    if (c === BACKSLASH) return true
    if (c === PERCENT) {
      if (path.charCodeAt(i + 1) === 53 /* 5 */ && (path.charCodeAt(i + 2) | 0x20) === 99 /* c */) return true
      if (!encodedSlash(path, i)) continue
      if (seg >= 0 && dotSegment(path, seg, i) > 0) return true
      leftEncoded = true
      i += 2
      seg = i + 1
    } else if (c === SEMICOLON) {
      if (seg >= 0 && dotSegment(path, seg, i) > 0) return true
      seg = -1
    } else {
      // SLASH
      if (leftEncoded && seg >= 0 && dotSegment(path, seg, i) > 0) return true
      leftEncoded = false
      seg = i + 1
    }
  }
  return leftEncoded && seg >= 0 && dotSegment(path, seg, n) > 0
}
