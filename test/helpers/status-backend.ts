/**
 * Backends whose behaviour a test flips at run time: one that answers every request with the
 * status it is told (a target that starts failing and recovers), and one whose TCP connect never
 * completes (a full accept queue: the SYN is dropped, as with a host gone dark).
 */
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { onTestFinished } from 'vitest'

export interface StatusBackend {
  name: string
  url: string
  id: string
  /** what every request is answered with from now on */
  status: number
  /** delay before answering, ms */
  delayMs: number
  /** requests answered so far */
  served: number
}

/** Closed after the current test. Answers `x-backend: name`; `/healthz` always passes. */
export async function statusBackend(name: string, status = 200): Promise<StatusBackend> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz') return void res.end('ok')
    const answer = () => {
      b.served++
      res.statusCode = b.status
      res.setHeader('x-backend', name)
      res.end(name)
    }
    if (b.delayMs > 0) setTimeout(answer, b.delayMs)
    else answer()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  const b: StatusBackend = { name, url: `http://127.0.0.1:${port}`, id: `127.0.0.1:${port}`, status, delayMs: 0, served: 0 }
  onTestFinished(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return b
}

/**
 * A port whose connects hang: a child process listens with a backlog of 1 and never accepts
 * (its only thread sleeps), and the accept queue is filled here, so further SYNs are dropped.
 * Killed after the current test.
 */
export async function blackhole(): Promise<{ url: string; id: string }> {
  const script =
    "const s=require('net').createServer();s.listen({host:'127.0.0.1',port:0,backlog:1},()=>{" +
    "process.stdout.write(s.address().port+'\\n');Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0)})"
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const fillers: Socket[] = []
  onTestFinished(() => {
    for (const s of fillers) s.destroy()
    child.kill('SIGKILL')
  })
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())))
    child.once('exit', (code) => reject(new Error(`blackhole exited with ${code}`)))
  })
  // Fill the queue until a connect no longer completes (bounded: the kernel queue is tiny).
  for (let i = 0; i < 16; i++) {
    const s = connect(port, '127.0.0.1')
    s.on('error', () => {})
    fillers.push(s)
    const connected = await new Promise<boolean>((resolve) => {
      s.once('connect', () => resolve(true))
      setTimeout(() => resolve(false), 200)
    })
    if (!connected) return { url: `http://127.0.0.1:${port}`, id: `127.0.0.1:${port}` }
  }
  throw new Error('blackhole: every connect completed; cannot make one hang')
}
