/**
 * A real DNS server on a loopback UDP port, answering A, AAAA and SRV queries from a table the
 * test changes while it runs. It can also answer SERVFAIL to everything or stay silent (a
 * resolver that does not answer), to test how lookups fail. Closed after the test.
 */
import { createSocket } from 'node:dgram'
import dnsPacket from 'dns-packet'
import { afterAll, onTestFinished } from 'vitest'

export interface SrvRecord {
  target: string
  port: number
  priority?: number
  weight?: number
}

/** The records of one name; a missing type answers NOERROR with no records (NODATA). */
export interface DnsRecords {
  A?: string[]
  AAAA?: string[]
  SRV?: SrvRecord[]
}

export interface DnsServer {
  /** `127.0.0.1:port`, as `discovery.dns.servers` takes it */
  readonly address: string
  readonly port: number
  /** names (without the trailing dot, any case) → records; unknown names answer NXDOMAIN */
  readonly zone: Map<string, DnsRecords>
  /** `answer` (from the zone), `servfail` (rcode 2 to everything) or `silent` (no answer at all) */
  mode: 'answer' | 'servfail' | 'silent'
  /** queries received so far, by `type name` (e.g. `A api.test`) */
  readonly queries: Map<string, number>
  /** total queries received */
  count(): number
  set(name: string, records: DnsRecords): void
  close(): Promise<void>
}

const live = new Set<() => Promise<void>>()
afterAll(async () => {
  await Promise.all([...live].map((close) => close()))
})

const NOERROR = 0
const SERVFAIL = 2
const NXDOMAIN = 3
const TTL = 1

export async function startDnsServer(zone: Record<string, DnsRecords> = {}): Promise<DnsServer> {
  const socket = createSocket('udp4')
  const records = new Map<string, DnsRecords>(Object.entries(zone).map(([k, v]) => [key(k), v]))
  const queries = new Map<string, number>()
  const server: DnsServer = {
    address: '',
    port: 0,
    zone: records,
    mode: 'answer',
    queries,
    count: () => [...queries.values()].reduce((a, b) => a + b, 0),
    set: (name, r) => void records.set(key(name), r),
    close: () => closeOnce(),
  }

  socket.on('message', (msg, rinfo) => {
    let query: dnsPacket.Packet
    try {
      query = dnsPacket.decode(msg)
    } catch {
      return // not DNS: ignore, as a server would
    }
    const question = query.questions?.[0]
    if (question === undefined) return
    const qkey = `${question.type} ${key(question.name)}`
    queries.set(qkey, (queries.get(qkey) ?? 0) + 1)
    if (server.mode === 'silent') return
    const found = records.get(key(question.name))
    const rcode = server.mode === 'servfail' ? SERVFAIL : found === undefined ? NXDOMAIN : NOERROR
    const answers = rcode === NOERROR && found !== undefined ? answersFor(question, found) : []
    const reply = dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER | rcode,
      questions: [question],
      answers,
    })
    socket.send(reply, rinfo.port, rinfo.address)
  })

  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject)
      resolve()
    })
  })
  const port = socket.address().port
  Object.assign(server, { port, address: `127.0.0.1:${port}` })

  let closed: Promise<void> | undefined
  const closeOnce = () => (closed ??= new Promise<void>((resolve) => socket.close(() => resolve())).finally(() => live.delete(closeOnce)))
  live.add(closeOnce)
  try {
    onTestFinished(closeOnce)
  } catch {
    // started outside a test (beforeAll): closed after the file
  }
  return server
}

function key(name: string): string {
  return name.replace(/\.$/, '').toLowerCase()
}

function answersFor(q: dnsPacket.Question, r: DnsRecords): dnsPacket.Answer[] {
  const name = q.name
  switch (q.type) {
    case 'A':
      return (r.A ?? []).map((data) => ({ type: 'A', name, ttl: TTL, class: 'IN', data }))
    case 'AAAA':
      return (r.AAAA ?? []).map((data) => ({ type: 'AAAA', name, ttl: TTL, class: 'IN', data }))
    case 'SRV':
      return (r.SRV ?? []).map((s) => ({
        type: 'SRV',
        name,
        ttl: TTL,
        class: 'IN',
        data: { target: s.target, port: s.port, priority: s.priority ?? 10, weight: s.weight ?? 10 },
      }))
    default:
      return []
  }
}
