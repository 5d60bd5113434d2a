/**
 * Short admin tokens. Off loopback whoever reaches the admin port can try tokens, so one
 * shorter than MIN_TOKEN_LENGTH is refused (the config loader reports it as a problem; these
 * checks hold for callers that start or reload an instance without the loader). On loopback
 * only local processes can try, so it is warned about: it may be a development token.
 */
import { isLoopbackHost, MIN_TOKEN_LENGTH, shortAdminTokens, shortTokenMessage } from '../../config/load.js'
import { DEFAULTS, type ConfigFile } from '../../config/schema.js'
import type { Logger } from '../../log.js'

/** Why this config's tokens are refused (named by path, never shown), or undefined. */
export function tokenLengthRefusal(config: ConfigFile): string | undefined {
  const host = config.admin?.host ?? DEFAULTS.admin.host
  if (isLoopbackHost(host)) return undefined
  const short = shortAdminTokens(config.admin)
  return short.length === 0 ? undefined : short.map(({ path, length }) => `${path}: ${shortTokenMessage(length, host)}`).join('; ')
}

/** One warning per short token when admin listens on loopback. */
export function warnShortTokens(config: ConfigFile, log: Logger): void {
  const host = config.admin?.host ?? DEFAULTS.admin.host
  if (!isLoopbackHost(host)) return
  for (const { path, length } of shortAdminTokens(config.admin)) {
    log.warn(
      { token: path, length, minLength: MIN_TOKEN_LENGTH },
      `${path} is ${length} characters: accepted because admin listens on loopback (${host}), refused on any other host; use at least ${MIN_TOKEN_LENGTH} (openssl rand -hex 32)`,
    )
  }
}
