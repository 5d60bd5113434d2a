/**
 * Reading the PEM files that TLS options name. Only the control plane and the config loader
 * call these (at start, on a change, on SIGHUP): the data plane gets the contents, never a path.
 * Every failure is an Error whose message names the file and says what is wrong with it.
 *
 * A path comes from an admin write or from the store, so it may name anything: a FIFO (a read
 * would wait for a writer forever), a device such as /dev/zero (endless) or /dev/random, a
 * directory, a huge file. So a file is opened non-blocking (opening a FIFO then returns at
 * once instead of waiting for a writer), checked with fstat on that very descriptor (no
 * window for a swap between the check and the read), refused unless it is a regular file of
 * at most MAX_PEM_BYTES, and read to at most that many bytes (a file that grows meanwhile is
 * refused too). Admin writes and store reads use the asynchronous reader (libuv's thread
 * pool, off the event loop); the config loader, synchronous, the same checks synchronously.
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs'
import { open } from 'node:fs/promises'
import { createSecureContext } from 'node:tls'

/** Largest PEM file read (a CA bundle of every public root is about 220 KiB). */
export const MAX_PEM_BYTES = 1024 * 1024

// O_NONBLOCK: opening a FIFO does not wait for a writer; O_NOCTTY: a terminal never becomes ours.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY

export function pemPaths(ca: string | readonly string[] | undefined): readonly string[] {
  return ca === undefined ? [] : typeof ca === 'string' ? [ca] : ca
}

/** What `stats` is, when it is not a regular file. */
function kindOf(stats: Stats): string {
  if (stats.isDirectory()) return 'a directory'
  if (stats.isFIFO()) return 'a FIFO'
  if (stats.isCharacterDevice()) return 'a character device'
  if (stats.isBlockDevice()) return 'a block device'
  if (stats.isSocket()) return 'a socket'
  return 'not a regular file'
}

function notUsable(path: string, stats: Stats): Error | undefined {
  if (!stats.isFile()) return new Error(`${path}: not a regular file (${kindOf(stats)})`)
  if (stats.size > MAX_PEM_BYTES) return new Error(`${path}: too large (${stats.size} bytes; at most ${MAX_PEM_BYTES})`)
  return undefined
}

const CHUNK_BYTES = 64 * 1024

/** A file's bytes read in chunks, refused past MAX_PEM_BYTES (a file that grew since its fstat). */
class Bounded {
  private readonly chunks: Buffer[] = []
  private length = 0
  private chunk: Buffer | undefined

  constructor(private readonly path: string) {}

  /** The buffer to read the next chunk into. */
  next(): Buffer {
    this.chunk = Buffer.allocUnsafe(CHUNK_BYTES)
    return this.chunk
  }

  /** Counts `bytesRead` into the last chunk; true at the end of the file. */
  add(bytesRead: number): boolean {
    if (bytesRead === 0) return true
    this.chunks.push(this.chunk!.subarray(0, bytesRead))
    this.length += bytesRead
    if (this.length > MAX_PEM_BYTES) throw new Error(`${this.path}: too large (more than ${MAX_PEM_BYTES} bytes)`)
    return false
  }

  toString(): string {
    return Buffer.concat(this.chunks, this.length).toString('utf8')
  }
}

function cannotRead(path: string, err: unknown): Error {
  return new Error(`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
}

/** The file's text, read with the checks above, off the event loop. */
export async function readBoundedFile(path: string): Promise<string> {
  let handle
  try {
    handle = await open(path, OPEN_FLAGS)
  } catch (err) {
    throw cannotRead(path, err)
  }
  try {
    const refused = notUsable(path, await handle.stat())
    if (refused !== undefined) throw refused
    const text = new Bounded(path)
    for (let chunk = text.next(); ; chunk = text.next()) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null)
      if (text.add(bytesRead)) return text.toString()
    }
  } catch (err) {
    if (err instanceof Error && err.message.startsWith(`${path}: `)) throw err
    throw cannotRead(path, err)
  } finally {
    await handle.close().catch(() => {})
  }
}

/** `readBoundedFile`, synchronously: for the config loader only. */
export function readBoundedFileSync(path: string): string {
  let fd: number
  try {
    fd = openSync(path, OPEN_FLAGS)
  } catch (err) {
    throw cannotRead(path, err)
  }
  try {
    const refused = notUsable(path, fstatSync(fd))
    if (refused !== undefined) throw refused
    const text = new Bounded(path)
    for (let chunk = text.next(); ; chunk = text.next()) {
      if (text.add(readSync(fd, chunk, 0, chunk.length, null))) return text.toString()
    }
  } catch (err) {
    if (err instanceof Error && err.message.startsWith(`${path}: `)) throw err
    throw cannotRead(path, err)
  } finally {
    closeSync(fd)
  }
}

function checkPem(path: string, text: string, kind: 'CERTIFICATE' | 'PRIVATE KEY'): string {
  // "PRIVATE KEY" also matches "RSA PRIVATE KEY" and "EC PRIVATE KEY" blocks.
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(text)) throw new Error(`${path}: no PEM ${kind.toLowerCase()} in this file`)
  return text
}

function checkCa(path: string, pem: string): string {
  checkPem(path, pem, 'CERTIFICATE')
  try {
    createSecureContext({ ca: pem })
  } catch (err) {
    throw new Error(`${path}: not a usable CA certificate: ${(err as Error).message}`, { cause: err })
  }
  return pem
}

/** The CA certificates of an upstream's `tls.ca`, in PEM, read off the event loop. */
export async function readCaFiles(paths: readonly string[]): Promise<string[]> {
  const pems: string[] = []
  for (const path of paths) pems.push(checkCa(path, await readBoundedFile(path)))
  return pems
}

/** `readCaFiles`, synchronously: for the config loader only. */
export function readCaFilesSync(paths: readonly string[]): string[] {
  return paths.map((path) => checkCa(path, readBoundedFileSync(path)))
}

/**
 * The CA files of the upstreams being compiled, read ahead (asynchronously) by the control
 * plane, so that the table compile, which is synchronous, takes their contents from here and
 * never touches the disk. `load` re-reads a path every time: a file replaced on disk counts
 * from the next change of an upstream naming it.
 */
export class CaFiles {
  private readonly files = new Map<string, string | Error>()

  /** Reads `paths` now; the failures are kept too (a compile naming one then fails with its reason). */
  async load(paths: Iterable<string>): Promise<Error[]> {
    const failures: Error[] = []
    for (const path of new Set(paths)) {
      try {
        this.files.set(path, checkCa(path, await readBoundedFile(path)))
      } catch (err) {
        this.files.set(path, err as Error)
        failures.push(err as Error)
      }
    }
    return failures
  }

  /** Forgets every path but `keep` (the ones the state in force names). */
  retain(keep: ReadonlySet<string>): void {
    for (const path of this.files.keys()) if (!keep.has(path)) this.files.delete(path)
  }

  /** The contents `load` read (CompileOptions.readCa); throws the reason a file failed, or when it was not read ahead. */
  readonly read = (paths: readonly string[]): string[] =>
    paths.map((path) => {
      const pem = this.files.get(path)
      if (pem === undefined) throw new Error(`${path}: not read ahead of the compile`)
      if (pem instanceof Error) throw pem
      return pem
    })
}

export interface ListenerTls {
  cert: string
  key: string
}

/** The listener's certificate and key, checked to make a TLS context together (a key that does not match its certificate is refused). */
export function readListenerTls(files: { cert: string; key: string }): ListenerTls {
  const pair = {
    cert: checkPem(files.cert, readBoundedFileSync(files.cert), 'CERTIFICATE'),
    key: checkPem(files.key, readBoundedFileSync(files.key), 'PRIVATE KEY'),
  }
  try {
    createSecureContext(pair)
  } catch (err) {
    throw new Error(`${files.cert} with ${files.key}: not a usable certificate and key: ${(err as Error).message}`, { cause: err })
  }
  return pair
}
