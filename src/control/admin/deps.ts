import type { Dataplane } from '../../dataplane/server.js'
import type { ControlPlane } from '../control-plane.js'
import type { Notifier } from '../../rollout/notify.js'
import type { DnsProvider } from '../providers/dns.js'
import type { TokenRole } from '../../config/schema.js'

/** An admin token: its name is the actor the audit log records; its role bounds what it may do. */
export interface AdminToken {
  name: string
  token: string
  role: TokenRole
}

/** What the admin API needs from the rest of the instance. */
export interface AdminDeps {
  control: ControlPlane
  dataplane: Dataplane
  /** `admin.token` (actor name `token`) and/or named tokens `admin.tokens` (actor = the name) */
  tokens: AdminToken[]
  /** DNS target discovery, for its lookup metrics */
  discovery?: DnsProvider
  /** sends rollout webhooks for the writes the API makes (start, pause, resume, promote, abort) */
  notifier?: Notifier
  /** what `GET /metrics` answers: this instance's metrics, or its process group's with `--workers` */
  metrics: { render(): Promise<string> }
  /** set once the instance is stopping: /readyz answers 503 SHUTTING_DOWN while it still serves */
  shuttingDown?: boolean
}
