// A cluster worker's view of the memory store, in a child process: it opens an IpcStore (the
// store workers use to reach the primary's state) and lets the parent drive it over the same
// IPC channel, so the store contract suite can run against the real IPC store.
import { IpcStore } from '../../dist/store/ipc.js'

const store = new IpcStore()
store.onChange((revision) => process.send({ sy: 'rpc-change', revision }))
process.on('message', async (m) => {
  if (m?.sy !== 'rpc') return
  try {
    const value = await store[m.op](...m.args)
    process.send({ sy: 'rpc-reply', id: m.id, ok: true, value: value === undefined ? null : value })
  } catch (err) {
    process.send({ sy: 'rpc-reply', id: m.id, ok: false, code: err.code, message: err.message })
  }
  if (m.op === 'close') process.disconnect()
})
process.send({ sy: 'rpc-ready' })
