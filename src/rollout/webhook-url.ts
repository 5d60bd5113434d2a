/**
 * What a webhook URL may be, and how it is shown.
 *
 * Refused targets: link-local addresses (169.254.0.0/16, fe80::/10, and 169.254.x.y written as
 * an IPv4-mapped IPv6 address). Clouds serve their instance metadata (credentials included) at
 * 169.254.169.254, and an admin API write must not be able to make the proxy POST there. Checked
 * twice: at write time for an address written in the URL (`checkNotify`), and at connect time
 * for whatever a name resolves to (notify.ts), since a name can point anywhere.
 *
 * Shown redacted: a Slack-style webhook URL carries its credential in the path, so the API and
 * the logs show only scheme, host and port (`https://hooks.slack.com/***`), as they show `***`
 * for a secret. The stored record keeps the real URL. A redacted URL (or secret) sent back, as a
 * client that re-posts what it read would, is refused rather than stored in place of the real one.
 */
import { BlockList, isIP } from 'node:net'
import type { Problem } from '../errors.js'
import type { Notify } from './schema.js'

/** What the API shows instead of a secret, and after a webhook URL's host instead of its path. */
export const REDACTED = '***'

const LINK_LOCAL = new BlockList()
LINK_LOCAL.addSubnet('169.254.0.0', 16, 'ipv4')
LINK_LOCAL.addSubnet('fe80::', 10, 'ipv6')
// BlockList matches IPv4-mapped IPv6 against the IPv4 rule already; said again so it does not hang on that.
LINK_LOCAL.addSubnet('::ffff:169.254.0.0', 112, 'ipv6')

/** True for a literal IPv4 or IPv6 address (brackets and a zone id allowed) in a link-local range. */
export function isLinkLocal(address: string): boolean {
  const bare = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '')
  const family = isIP(bare)
  if (family === 0) return false
  return LINK_LOCAL.check(bare, family === 4 ? 'ipv4' : 'ipv6')
}

/** `https://hooks.slack.com/services/T0/B0/xyz?x=1` → `https://hooks.slack.com/***` (userinfo, path, query and fragment hidden). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}/${REDACTED}`
  } catch {
    return REDACTED
  }
}

/** The form redactUrl gives: only the host is left, the path is `/***`. */
function isRedacted(url: URL): boolean {
  return url.pathname === `/${REDACTED}` && url.search === '' && url.hash === ''
}

/** `notify` entries as the API and the logs show them: URL redacted, secret `***`. */
export function redactNotify(list: Notify[]): Notify[] {
  return list.map((n) => ({ ...n, url: redactUrl(n.url), ...(n.secret === undefined ? {} : { secret: REDACTED }) }))
}

/**
 * Problems of a rollout body's `notify` entries, at `path` (`body.notify`): a URL that does not
 * parse, a link-local address, or a redacted URL or secret sent back.
 */
export function checkNotify(list: Notify[] | undefined, path = 'body.notify'): Problem[] {
  const problems: Problem[] = []
  ;(list ?? []).forEach((n, i) => {
    let url: URL
    try {
      url = new URL(n.url)
    } catch {
      problems.push({ path: `${path}[${i}].url`, message: 'not a valid URL' })
      return
    }
    if (isLinkLocal(url.hostname)) {
      problems.push({ path: `${path}[${i}].url`, message: `${url.hostname} is a link-local address (cloud metadata lives there); webhooks may not target 169.254.0.0/16 or fe80::/10` })
    }
    if (isRedacted(url)) {
      problems.push({ path: `${path}[${i}].url`, message: `this is the redacted form the API shows (path ${REDACTED}); send the real URL` })
    }
    if (n.secret === REDACTED) problems.push({ path: `${path}[${i}].secret`, message: `${REDACTED} is the redacted form the API shows; send the real secret` })
  })
  return problems
}
