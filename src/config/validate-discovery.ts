/**
 * Semantic checks of `discovery.dns` (the schema only bounds lengths): a usable DNS name,
 * a port where the records carry none, DNS servers as IP addresses with optional ports.
 */
import { isIP } from 'node:net'
import type { DnsDiscovery } from './schema.js'

export interface DiscoveryProblem {
  at: (string | number)[]
  message: string
}

/** Letters, digits, `-` and `_` (SRV names: `_http._tcp.api`), 1–63 per label, no `-` at either end. */
const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/

/** Every problem of one `discovery.dns`, with its path below it. */
export function discoveryProblems(dns: DnsDiscovery): DiscoveryProblem[] {
  const problems: DiscoveryProblem[] = []
  const name = dns.name.endsWith('.') ? dns.name.slice(0, -1) : dns.name
  if (isIP(name) !== 0) {
    problems.push({ at: ['name'], message: 'is an IP address, not a DNS name: use a static target for it' })
  } else if (name.length === 0 || name.length > 253 || !name.split('.').every((label) => LABEL.test(label))) {
    problems.push({
      at: ['name'],
      message: 'must be a DNS name: labels of letters, digits, "-" and "_" (1 to 63 characters, not starting or ending with "-"), separated by dots',
    })
  }
  const type = dns.type ?? 'A'
  if (type === 'SRV' && dns.port !== undefined) {
    problems.push({ at: ['port'], message: 'must not be set with type SRV: each SRV record carries its port' })
  } else if (type !== 'SRV' && dns.port === undefined) {
    problems.push({ at: ['port'], message: `is required with type ${type} (the port of the targets)` })
  }
  // Safe on input the schema rejected (the loader runs this beside the shape check).
  const servers: unknown[] = Array.isArray(dns.servers) ? dns.servers : []
  servers.forEach((server, i) => {
    if (typeof server === 'string' && parseServer(server) === undefined) {
      problems.push({ at: ['servers', i], message: 'must be an IP address with an optional port: 10.0.0.2, 10.0.0.2:5353, [fd00::2]:53 or fd00::2' })
    }
  })
  return problems
}

/** `ip`, `ip:port`, `[ip6]`, `[ip6]:port` or a bare IPv6 address → its parts; undefined when invalid. */
export function parseServer(server: string): { host: string; port: number } | undefined {
  let host = server
  let port = 53
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(server)
  const v4 = /^([0-9.]+):(\d{1,5})$/.exec(server)
  if (bracketed) {
    host = bracketed[1]!
    if (bracketed[2] !== undefined) port = Number(bracketed[2])
    if (isIP(host) !== 6) return undefined
  } else if (v4) {
    host = v4[1]!
    port = Number(v4[2])
    if (isIP(host) !== 4) return undefined
  } else if (isIP(host) === 0) return undefined
  if (port < 1 || port > 65535) return undefined
  return { host, port }
}
