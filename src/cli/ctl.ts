/** `switchyard ctl`: the admin API client. Not built yet (it comes with the rollouts issue). */
export async function ctl(_args: string[]): Promise<number> {
  process.stderr.write('switchyard ctl: not available yet in this version; use the admin API (see README)\n')
  return 2
}
