/**
 * `--workers`: the primary accepts the connections of one port (proxy or admin) and hands each
 * to a worker, round-robin over the workers that are ready, as node:cluster's default
 * scheduling does, with one difference that matters for zero downtime: the primary keeps its
 * copy of a connection until the worker says it took it, and gives the connection to another
 * worker if that one died (or is stopping) first. node:cluster keeps that copy open for good when
 * the worker dies in between, so the client of a connection on its way to a worker that is
 * SIGKILLed (or crashes, or is OOM-killed) waits, unanswered, until its own timeout.
 *
 * Nothing is read from a connection here (`pauseOnConnect`): the worker reads it from the start.
 * The cost is one IPC message each way per connection, as with node:cluster, plus the
 * `net.Socket` the primary builds for each (node:cluster passes the bare handle): about 20 µs
 * more CPU per new connection. Requests on keep-alive connections never pass through the primary.
 */
import type { Worker } from 'node:cluster'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { isMessage, type ConnectionMessage, type ConnectionTakenMessage } from './messages.js'

export type Port = ConnectionMessage['port']

const ignore = (): void => {}

/** One id space for every distributor, so a worker's answer names one connection. */
let lastId = 0

export class Distributor {
  private readonly server: Server
  /** workers taking connections now, in turn order */
  private rotation: Worker[] = []
  private turn = 0
  /** connections that arrived while no worker took connections */
  private waiting: Socket[] = []
  /** connections sent to a worker that has not said yet whether it took them */
  private readonly sent = new Map<number, { socket: Socket; worker: Worker }>()
  /** workers whose answers and exit this distributor listens to */
  private readonly known = new Set<Worker>()
  private closed = false

  /** `onError`: the listening socket failed after it was bound (EMFILE...); the primary logs it. */
  constructor(
    readonly port: Port,
    onError: (err: Error) => void,
  ) {
    this.server = createServer({ pauseOnConnect: true }, (socket) => this.give(socket))
    // An accept error must not end the primary (and with it every worker); it is reported.
    this.server.on('error', (err) => {
      if (this.server.listening) onError(err)
    })
  }

  /** Binds the port; rejects (EADDRINUSE...) without side effects. */
  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => {
        this.server.off('error', reject)
        resolve(this.server.address() as AddressInfo)
      })
    })
  }

  /** `worker` takes connections from now on (it is ready); the waiting ones go out at once. */
  add(worker: Worker): void {
    if (this.closed || this.rotation.includes(worker) || !worker.isConnected()) return
    this.watch(worker)
    this.rotation.push(worker)
    const waiting = this.waiting
    this.waiting = []
    for (const socket of waiting) this.give(socket)
  }

  /**
   * `worker` gets no new connection (it is being retired or stopped); those already sent to it
   * are its own once it says it took them.
   */
  remove(worker: Worker): void {
    this.rotation = this.rotation.filter((w) => w !== worker)
  }

  /** Whether any worker takes connections. */
  get serving(): boolean {
    return this.rotation.length > 0
  }

  /** Stops accepting and closes the connections no worker took: the port is refused from now on. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.rotation = []
    this.server.close()
    for (const socket of this.waiting) socket.destroy()
    this.waiting = []
    for (const { socket } of this.sent.values()) socket.destroy()
    this.sent.clear()
  }

  private give(socket: Socket): void {
    if (this.closed) return void socket.destroy()
    // A paused socket reads nothing, but a reset while it waits must not throw in the primary.
    if (socket.listenerCount('error') === 0) socket.on('error', ignore)
    const worker = this.next()
    if (worker === undefined) return void this.waiting.push(socket)
    const id = ++lastId
    this.sent.set(id, { socket, worker })
    const message: ConnectionMessage = { sy: 'conn', port: this.port, id }
    worker.send(message, socket, { keepOpen: true }, (err: Error | null) => {
      // The channel closed under the message: the worker is gone or going.
      if (err !== null && this.sent.delete(id)) {
        this.remove(worker)
        this.give(socket)
      }
    })
  }

  private next(): Worker | undefined {
    // A worker whose channel closed is dying: its exit takes it out of the rotation, skip it now.
    for (let tries = this.rotation.length; tries > 0; tries--) {
      const worker = this.rotation[this.turn++ % this.rotation.length]!
      if (worker.isConnected()) return worker
    }
    return undefined
  }

  private watch(worker: Worker): void {
    if (this.known.has(worker)) return
    this.known.add(worker)
    const onMessage = (m: unknown) => {
      if (!isMessage<ConnectionTakenMessage>(m, 'conn-taken')) return
      const entry = this.sent.get(m.id)
      if (entry === undefined) return
      this.sent.delete(m.id)
      if (m.taken) return void entry.socket.destroy() // the worker holds its own copy: closing ours ends nothing
      // The worker is stopping: it takes no more, another one gets this connection.
      this.remove(worker)
      this.give(entry.socket)
    }
    worker.on('message', onMessage)
    worker.once('exit', () => {
      worker.off('message', onMessage)
      this.known.delete(worker)
      this.remove(worker)
      for (const [id, entry] of this.sent) {
        if (entry.worker !== worker) continue
        this.sent.delete(id)
        this.give(entry.socket)
      }
    })
  }
}
