/**
 * Header handling for the hot path. Works on Node's flat `rawHeaders` arrays, so there is no
 * per-request header object and repeated headers keep their order.
 */
import type { BlockList } from 'node:net'
import { validHost, type RejectReason } from './request-checks.js'

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1: Connection and the fields it names, Proxy-Connection,
 * Keep-Alive, TE, Transfer-Encoding, Upgrade) plus Proxy-Authorization (RFC 9110 §11.7.2, meant
 * for the proxy) and Expect (Node answers `100-continue` itself; undici refuses to send it).
 */
const HOP_BY_HOP_REQUEST = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'trailer',
  'proxy-authorization',
  'expect',
])
const HOP_BY_HOP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'trailer'])

/** Prefix of the proxy's own headers; clients cannot set them (they never reach an upstream from a client). */
export const INTERNAL_PREFIX = 'x-switchyard-'
export const FLAGS_HEADER = 'x-switchyard-flags'

export interface RequestHead {
  /** headers for the upstream, flat [name, value, ...]; Host kept as the client sent it */
  headers: string[]
  host: string
  hasBody: boolean
  /** set when the request must be refused with 400 and not forwarded (its Host is unusable) */
  reject: RejectReason | null
}

/** No admin token configured: nothing to look for. */
export const NO_TOKENS: ReadonlySet<string> = new Set()

/**
 * How this listener sets forwarding headers: static per listener (the admin tokens and the
 * trusted proxies are replaced whole on reload), read on every request.
 */
export interface Forwarding {
  /** the X-Forwarded-Proto this listener sets: `https` on a TLS listener */
  readonly proto: 'http' | 'https'
  /** peers whose X-Forwarded-*, Forwarded and X-Real-IP are kept (listen.trustedProxies); null: none */
  readonly trusted: TrustedPeers | null
  /** stripped from `Authorization: Bearer ...` */
  readonly adminTokens: ReadonlySet<string>
}

/** A plain listener that trusts no peer and knows no admin token. */
export const PLAIN_FORWARDING: Forwarding = { proto: 'http', trusted: null, adminTokens: NO_TOKENS }

/** Answers kept per address; past this many the memo starts over (a bound, not an eviction policy). */
const MEMO_SIZE = 4096

/**
 * listen.trustedProxies with the answer per peer address remembered: a BlockList lookup parses
 * the address each time (about 0.5 µs), while the peers that send forwarding headers are
 * mostly the same few load balancers, looked up on every request.
 */
export class TrustedPeers {
  private readonly memo = new Map<string, boolean>()

  constructor(private readonly list: BlockList) {}

  /** Whether `addr`, as the socket reports it (IPv4-mapped or not), is in the list. */
  has(addr: string | undefined): boolean {
    if (addr === undefined) return false
    let trusted = this.memo.get(addr)
    if (trusted === undefined) {
      // BlockList matches an IPv4-mapped IPv6 address (::ffff:10.0.0.1) against IPv4 rules too.
      trusted = this.list.check(addr, addr.includes(':') ? 'ipv6' : 'ipv4')
      if (this.memo.size >= MEMO_SIZE) this.memo.clear()
      this.memo.set(addr, trusted)
    }
    return trusted
  }
}

/**
 * True when an Authorization value is `Bearer <one of the admin tokens>`, read the way the
 * admin API reads it (scheme case-insensitive, RFC 6750 §2.1; spaces around the token ignored),
 * so that every value the admin API would accept is caught.
 */
function isAdminToken(value: string, tokens: ReadonlySet<string>): boolean {
  if (value.length < 8 || value.charCodeAt(6) !== 32 /* space */) return false
  if (value.slice(0, 6).toLowerCase() !== 'bearer') return false
  return tokens.has(value.slice(7).trim())
}

/** Names listed in `Connection` (other than close/keep-alive) are hop-by-hop too. */
function connectionTokens(value: string, into: Set<string> | null): Set<string> | null {
  // The common values name no extra header: skip the split.
  if (value.length <= 10) {
    const v = value.toLowerCase()
    if (v === 'keep-alive' || v === 'close') return into
  }
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase()
    if (t !== '' && t !== 'close' && t !== 'keep-alive') (into ??= new Set()).add(t)
  }
  return into
}

/** Strips IPv4-mapped IPv6 so X-Forwarded-For shows `127.0.0.1`, not `::ffff:127.0.0.1`. */
export function clientIp(addr: string | undefined): string {
  if (addr === undefined) return ''
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr
}

/** A forwarding header from a client: X-Forwarded-* (the name lowercased, `_` read as `-`) or X-Real-IP. */
function isForwardingName(key: string): boolean {
  return key.startsWith('x-forwarded-') || key === 'x-real-ip'
}

/**
 * Builds the upstream request headers: hop-by-hop and internal headers removed, the forwarding
 * headers set, the flags header added. `keepUpgrade` keeps Connection/Upgrade for WebSocket
 * handshakes.
 *
 * Forwarding headers (the Traefik `forwardedHeaders.trustedIPs` model): from a peer outside
 * `fwd.trusted`, every client `X-Forwarded-*`, `Forwarded` and `X-Real-IP` is dropped and the
 * proxy sets its own X-Forwarded-For (the peer), -Proto (this listener's) and -Host (the Host
 * sent). From a trusted peer they are kept: X-Forwarded-For is appended to, a -Proto or -Host
 * it sent is kept (else ours is set), Forwarded and X-Real-IP pass as sent. Whether the peer is
 * trusted is only looked up when the request carries one of those headers and a list is set.
 *
 * Names read with `_` as `-` (CGI-style backends read `x_switchyard_flags` as
 * `x-switchyard-flags`): an internal header or a forwarding header spelled with underscores is
 * dropped from every peer (no proxy sends those spellings: they can only be a client's).
 *
 * An `Authorization: Bearer <admin token>` is dropped (the admin token never reaches an
 * upstream, even from a ctl pointed at the wrong port); any other Authorization passes.
 * More than one Host, or a Host that is not `host[:port]`, sets `reject` (RFC 9112 §3.2).
 * `peer` is the socket's remote address as reported (IPv4-mapped or not).
 */
export function requestHead(raw: string[], peer: string | undefined, flags: string | null, fwd: Forwarding = PLAIN_FORWARDING, keepUpgrade = false): RequestHead {
  const out: string[] = []
  let host = ''
  let hosts = 0
  let hasBody = false
  let xff: string | null = null
  let extra: Set<string> | null = null
  // -1: not looked up yet (most requests carry no forwarding header and never look it up)
  let trust = -1
  let keptProto = false
  let keptHost = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    const lower = name.toLowerCase()
    if (HOP_BY_HOP_REQUEST.has(lower)) {
      if (lower === 'connection') {
        extra = connectionTokens(value, extra)
        if (keepUpgrade) out.push(name, value)
      } else if (lower === 'transfer-encoding') {
        hasBody = true
      } else if (lower === 'upgrade' && keepUpgrade) {
        out.push(name, value)
      }
      continue
    }
    if (lower.charCodeAt(0) === 120 /* x */) {
      // Only names with `_` pay for a second spelling; internal and forwarding names start with x.
      const key = lower.includes('_') ? lower.replaceAll('_', '-') : lower
      if (key.charCodeAt(1) === 45 /* - */) {
        if (key.startsWith(INTERNAL_PREFIX)) continue
        if (isForwardingName(key)) {
          if (key !== lower) continue
          if (trust < 0) trust = fwd.trusted !== null && fwd.trusted.has(peer) ? 1 : 0
          if (trust === 0) continue
          if (key === 'x-forwarded-for') {
            xff = xff === null ? value : `${xff}, ${value}`
            continue
          }
          if (key === 'x-forwarded-proto') keptProto = true
          else if (key === 'x-forwarded-host') keptHost = true
        }
      }
    } else if (lower === 'host') {
      host = value
      hosts++
    } else if (lower === 'content-length') {
      if (value !== '0') hasBody = true
    } else if (lower === 'authorization') {
      if (fwd.adminTokens.size > 0 && isAdminToken(value, fwd.adminTokens)) continue
    } else if (lower === 'forwarded') {
      if (trust < 0) trust = fwd.trusted !== null && fwd.trusted.has(peer) ? 1 : 0
      if (trust === 0) continue
    }
    out.push(name, value)
  }
  if (extra !== null) removeNamed(out, extra, keepUpgrade)
  const ip = clientIp(peer)
  out.push('x-forwarded-for', xff === null ? ip : `${xff}, ${ip}`)
  if (!keptProto) out.push('x-forwarded-proto', fwd.proto)
  if (!keptHost && host !== '') out.push('x-forwarded-host', host)
  if (flags !== null && flags !== '') out.push(FLAGS_HEADER, flags)
  const reject = hosts > 1 ? 'host_repeated' : host !== '' && !validHost(host) ? 'host_invalid' : null
  return { headers: out, host, hasBody, reject }
}

function removeNamed(out: string[], names: Set<string>, keepUpgrade: boolean): void {
  for (let i = out.length - 2; i >= 0; i -= 2) {
    const lower = out[i]!.toLowerCase()
    if (names.has(lower) && !(keepUpgrade && lower === 'upgrade')) out.splice(i, 2)
  }
}

/**
 * Fills `out` with the response headers for the client: undici's raw Buffers as latin1 strings,
 * hop-by-hop removed. Returns the Content-Length, or -1 when there is none (or it is not a
 * plain number), so the body's last chunk can end the response in the same write.
 */
export function responseHeaders(raw: Buffer[], out: string[]): number {
  let extra: Set<string> | null = null
  let length = -1
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1')
    const lower = name.toLowerCase()
    if (HOP_BY_HOP_RESPONSE.has(lower)) {
      if (lower === 'connection') extra = connectionTokens(raw[i + 1]!.toString('latin1'), extra)
      continue
    }
    const value = raw[i + 1]!.toString('latin1')
    if (lower === 'content-length') length = /^[0-9]{1,15}$/.test(value) ? Number(value) : -1
    out.push(name, value)
  }
  if (extra !== null) removeNamed(out, extra, false)
  return length
}

/** First value of a header (name lowercase) in a raw array; undefined if absent. */
export function rawHeader(raw: string[], lowerName: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) return raw[i + 1]
  }
  return undefined
}

/** True when any value of the header satisfies `test` (with repeated headers, any match counts). */
export function anyRawHeader(raw: string[], lowerName: string, test: (v: string) => boolean): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === lowerName.length && name.toLowerCase() === lowerName && test(raw[i + 1]!)) return true
  }
  return false
}
