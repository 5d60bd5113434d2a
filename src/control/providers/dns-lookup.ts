/**
 * One DNS discovery lookup: a name → the targets it stands for (`id`, `url`), through a
 * node:dns Resolver. No state and no timers: `dns.ts` schedules lookups and keeps the sets.
 */
import type { Resolver } from 'node:dns/promises'
import { isIP } from 'node:net'
import { DEFAULTS, type DnsDiscovery } from '../../config/schema.js'

/** A target a lookup found. */
export interface Found {
  id: string
  url: string
}

/** Answers that mean "this name has no such records" (NXDOMAIN, NODATA), not "the lookup failed". */
const NO_RECORDS = new Set(['ENOTFOUND', 'ENODATA'])

/** A lookup error with the resolver's code (ESERVFAIL, ETIMEOUT, ENOTFOUND...) kept for the log. */
export class LookupError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
    this.name = 'LookupError'
  }
}

/**
 * The target id of an address: `host:port` like a static target's default id. IPv6 addresses
 * are in their canonical compressed form (RFC 5952); one that starts with `::` gets a leading
 * `0` (`0::1:8080`, the same address), because an id must start with a letter or digit. The
 * port is always the last `:` field, so no two (address, port) pairs share an id.
 */
export function discoveredId(address: string, port: number): string {
  if (isIP(address) !== 6) return `${address}:${port}`
  const host = canonicalIpv6(address)
  return `${host.startsWith(':') ? `0${host}` : host}:${port}`
}

/** The url of a discovered address: `http://10.0.0.5:8080`, `http://[fd00::5]:8080`. */
export function discoveredUrl(address: string, port: number): string {
  return isIP(address) === 6 ? `http://[${canonicalIpv6(address)}]:${port}` : `http://${address}:${port}`
}

function canonicalIpv6(address: string): string {
  return new URL(`http://[${address}]/`).hostname.slice(1, -1)
}

/**
 * Resolves `dns` once. A and AAAA give one target per address on `dns.port`. SRV gives one per
 * record of the lowest priority value (RFC 2782: higher values are backups, not used here),
 * on the record's port, at the addresses of its target name (A, or AAAA when it has none);
 * weights are not used (the balancers weigh targets by their outstanding requests).
 * Rejects with a LookupError when the lookup failed or found no address at all: discovery then
 * keeps its last good set. The result is sorted by id and has no duplicates.
 */
export async function lookup(resolver: Resolver, dns: DnsDiscovery): Promise<Found[]> {
  const type = dns.type ?? DEFAULTS.discovery.type
  let found: Found[]
  if (type === 'SRV') {
    const records = await query(() => resolver.resolveSrv(dns.name), 'SRV', dns.name)
    const best = Math.min(...records.map((r) => r.priority))
    const chosen = records.filter((r) => r.priority === best)
    const addresses = new Map<string, Promise<string[]>>()
    for (const r of chosen) if (!addresses.has(r.name)) addresses.set(r.name, addressesOf(resolver, r.name))
    found = []
    for (const r of chosen) {
      for (const address of await addresses.get(r.name)!) found.push({ id: discoveredId(address, r.port), url: discoveredUrl(address, r.port) })
    }
  } else {
    const port = dns.port ?? 80 // validation requires a port for A and AAAA
    const addresses = await query(() => (type === 'A' ? resolver.resolve4(dns.name) : resolver.resolve6(dns.name)), type, dns.name)
    found = addresses.map((a) => ({ id: discoveredId(a, port), url: discoveredUrl(a, port) }))
  }
  const byId = new Map(found.map((f) => [f.id, f]))
  if (byId.size === 0) throw new LookupError('ENODATA', `${type} ${dns.name}: no address found`)
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}

/** The addresses of an SRV record's target: A records, else AAAA; none when it has neither. */
async function addressesOf(resolver: Resolver, name: string): Promise<string[]> {
  const bare = name.endsWith('.') ? name.slice(0, -1) : name
  if (isIP(bare) !== 0) return [bare]
  try {
    return await query(() => resolver.resolve4(name), 'A', name)
  } catch (err) {
    if (!(err instanceof LookupError) || !NO_RECORDS.has(err.code)) throw err
  }
  try {
    return await query(() => resolver.resolve6(name), 'AAAA', name)
  } catch (err) {
    if (err instanceof LookupError && NO_RECORDS.has(err.code)) return []
    throw err
  }
}

/** Runs one query, turning node's errors into LookupErrors with the query in the message. */
async function query<T>(run: () => Promise<T[]>, type: string, name: string): Promise<T[]> {
  try {
    return await run()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EUNKNOWN'
    throw new LookupError(code, `${type} ${name}: ${code}`)
  }
}
