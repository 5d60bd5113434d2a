// What Linux's /proc says of a bench's child processes: parents, CPU time, memory.
import fs from 'node:fs'

/** The fields of /proc/PID/stat after the command name (which may hold spaces), from `state` on. */
function statFields (pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/** The parent pid of `pid`, or null. */
export function ppidOf (pid) {
  try { return Number(statFields(pid)[1]) } catch { return null }
}

/** The pids whose parent is `pid` (a primary's workers, nginx's worker). */
export function childPids (pid) {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d) && Number(d) !== pid && ppidOf(Number(d)) === pid).map(Number)
}

const TICK_US = 1e6 / 100 // USER_HZ is 100 on Linux

/** CPU time (user + system, µs) of `pid` alone; throws when it is gone. */
export function cpuUsOf (pid) {
  const f = statFields(pid)
  return (Number(f[11]) + Number(f[12])) * TICK_US
}

/**
 * VmRSS and VmHWM (peak) of `pid` in MB, and its PSS (its resident pages, each shared one divided
 * by the number of processes sharing it: summed over processes, what they take together); throws
 * when it is gone, PSS NaN where /proc has no smaps_rollup.
 */
export function memoryOf (pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (k) => Number(s.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm'))?.[1])
  let pss = NaN
  try { pss = Number(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').match(/^Pss:\s+(\d+) kB/m)?.[1]) / 1024 } catch {}
  return { rssMB: kb('VmRSS') / 1024, peakMB: kb('VmHWM') / 1024, pssMB: pss }
}
