/**
 * The oldest Node.js switchyard runs on: 22.19, the floor of undici 8 (its HTTP client) and of
 * the oldest LTS line still supported. package.json's `engines.node` says the same (a test
 * holds them together). Checked before anything else loads, so an older Node gets one clear
 * line instead of a crash somewhere inside a dependency.
 */
export const MIN_NODE = '22.19.0'

/** Why `version` (as in `process.versions.node`) cannot run switchyard, or null when it can. */
export function unsupportedNode(version: string): string | null {
  const [major = 0, minor = 0] = version.split('.').map(Number)
  const [minMajor = 0, minMinor = 0] = MIN_NODE.split('.').map(Number)
  if (major > minMajor || (major === minMajor && minor >= minMinor)) return null
  return `needs Node.js ${MIN_NODE} or newer (22 or 24 LTS); this is Node.js ${version}`
}
