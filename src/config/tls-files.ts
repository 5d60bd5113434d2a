/**
 * Reading the PEM files that TLS options name. Only the control plane and the config loader
 * call these (at start, on a change, on SIGHUP): the data plane gets the contents, never a path.
 * Every failure is an Error whose message names the file and says what is wrong with it.
 */
import { readFileSync } from 'node:fs'
import { createSecureContext } from 'node:tls'

export function pemPaths(ca: string | readonly string[] | undefined): readonly string[] {
  return ca === undefined ? [] : typeof ca === 'string' ? [ca] : ca
}

function readPem(path: string, kind: 'CERTIFICATE' | 'PRIVATE KEY'): string {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new Error(`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
  // "PRIVATE KEY" also matches "RSA PRIVATE KEY" and "EC PRIVATE KEY" blocks.
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(text)) throw new Error(`${path}: no PEM ${kind.toLowerCase()} in this file`)
  return text
}

/** The CA certificates of an upstream's `tls.ca`, in PEM. */
export function readCaFiles(paths: readonly string[]): string[] {
  const pems = paths.map((p) => readPem(p, 'CERTIFICATE'))
  for (const [i, pem] of pems.entries()) {
    try {
      createSecureContext({ ca: pem })
    } catch (err) {
      throw new Error(`${paths[i]}: not a usable CA certificate: ${(err as Error).message}`, { cause: err })
    }
  }
  return pems
}

export interface ListenerTls {
  cert: string
  key: string
}

/** The listener's certificate and key, checked to make a TLS context together (a key that does not match its certificate is refused). */
export function readListenerTls(files: { cert: string; key: string }): ListenerTls {
  const pair = { cert: readPem(files.cert, 'CERTIFICATE'), key: readPem(files.key, 'PRIVATE KEY') }
  try {
    createSecureContext(pair)
  } catch (err) {
    throw new Error(`${files.cert} with ${files.key}: not a usable certificate and key: ${(err as Error).message}`, { cause: err })
  }
  return pair
}
