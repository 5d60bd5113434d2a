/** Real backends on ephemeral loopback ports: in-process, or a child process that can be SIGKILLed. */
import { spawn, type ChildProcess } from 'node:child_process'
import type { Server } from 'node:http'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
// @ts-expect-error plain JS helper, shared with child processes
import { createBackend } from './backend-server.mjs'

export interface Backend {
  name: string
  port: number
  url: string
  id: string
  state: { aborts: number; requests: number; lastHeaders: string[] | null }
  /** the backend's WebSocket server (echo), to act on its connections */
  wss: { clients: Set<{ terminate(): void }> }
  close(): Promise<void>
}

export async function startBackend(name = 'backend'): Promise<Backend> {
  const b = (await createBackend({ name })) as Omit<Backend, 'close'> & { server: Server; wss: { clients: Set<{ terminate(): void }>; close(): void } }
  return {
    ...b,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of b.wss.clients) c.terminate()
        b.wss.close()
        b.server.closeAllConnections()
        b.server.close(() => resolve())
      }),
  }
}

export interface BackendProcess {
  name: string
  port: number
  url: string
  id: string
  child: ChildProcess
  kill(signal?: NodeJS.Signals): Promise<void>
}

const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL')
})

/** A backend in its own process, so a test can kill it with a real signal. */
export async function spawnBackend(name: string): Promise<BackendProcess> {
  const script = fileURLToPath(new URL('./backend-server.mjs', import.meta.url))
  const child = spawn(process.execPath, [script, name], { stdio: ['ignore', 'pipe', 'inherit'] })
  live.add(child)
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! })
    rl.once('line', (l) => {
      rl.close()
      resolve(l)
    })
    child.once('exit', (code) => reject(new Error(`backend ${name} exited with ${code}`)))
  })
  const port = (JSON.parse(line) as { port: number }).port
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    id: `127.0.0.1:${port}`,
    child,
    kill: (signal = 'SIGKILL') =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        child.once('exit', () => {
          live.delete(child)
          resolve()
        })
        child.kill(signal)
      }),
  }
}
