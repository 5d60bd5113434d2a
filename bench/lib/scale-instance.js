// One instance for bench/scale.js, run as a child with an IPC channel. argv: mode config.json
//   full:     the whole switchyard (data plane on a port, admin API, control plane)
//   follower: the real control plane and compiler on a data plane that does not listen: how
//             the bench counts 20 instances on 2 cores
// It reports {type:'ready', proxyPort, adminPort} and {type:'applied', revision, at} for every
// table swap (at = performance.timeOrigin + performance.now(): one clock for every process on a
// host), and answers {type:'cpu'} and {type:'eld-reset'|'eld-read'} (event-loop delay inside it).
import fs from 'node:fs'
import inspector from 'node:inspector'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { startSwitchyard, seedState, storeFor } from '../../dist/app.js'
import { ControlPlane } from '../../dist/control/control-plane.js'
import { Dataplane } from '../../dist/dataplane/server.js'
import { silentLogger } from '../../dist/log.js'

const [mode, file] = process.argv.slice(2)
const config = JSON.parse(fs.readFileSync(file, 'utf8'))
// timeOrigin read once: it is a getter that costs more than the now() it is added to.
const origin = performance.timeOrigin
const now = () => origin + performance.now()
// Enabled only when asked: a 1 ms timer in each of 20 processes would itself load the 2 cores.
const eld = monitorEventLoopDelay({ resolution: 1 })

let control
let profiler
let ports = {}
if (mode === 'full') {
  const app = await startSwitchyard(config)
  control = app.control
  ports = { proxyPort: Number(new URL(app.proxyUrl).port), adminPort: Number(new URL(app.adminUrl).port) }
} else {
  const store = await storeFor(config)
  control = new ControlPlane({ store, dataplane: new Dataplane(), seed: seedState(config), log: silentLogger })
  await control.start()
}
// The time is taken at the swap; the report goes a little later, so that this bench's own IPC
// does not compete with the other instances still applying (the bench waits for every report).
const REPORT_DEFER_MS = 50
control.follower.onApplied((state) => {
  const at = now()
  setTimeout(() => process.send({ type: 'applied', revision: state.revision, at }), REPORT_DEFER_MS)
})
process.on('message', (m) => {
  if (m.type === 'cpu') {
    const { user, system } = process.cpuUsage()
    process.send({ type: 'cpu', us: user + system })
  } else if (m.type === 'prof-start') {
    // A CPU profile of the writes alone (BENCH_CPU_PROF), not of the start-up compile.
    profiler ??= new inspector.Session()
    profiler.connect()
    profiler.post('Profiler.enable', () => profiler.post('Profiler.start', () => process.send({ type: 'prof-start' })))
  } else if (m.type === 'prof-stop') {
    profiler.post('Profiler.stop', (err, { profile }) => {
      if (!err) fs.writeFileSync(m.file, JSON.stringify(profile))
      profiler.disconnect()
      process.send({ type: 'prof-stop' })
    })
  } else if (m.type === 'mark') {
    console.log('MARK', m.revision, (performance.now()).toFixed(1))
  } else if (m.type === 'eld-reset') {
    eld.enable()
    eld.reset()
    process.send({ type: 'eld-reset' })
  } else if (m.type === 'eld-read') {
    eld.disable()
    process.send({ type: 'eld-read', p99Ms: eld.percentile(99) / 1e6, maxMs: eld.max / 1e6 })
  }
})
process.on('SIGTERM', () => process.exit(0))
process.send({ type: 'ready', revision: control.state.revision, ...ports })
