/**
 * Polls `fn` until it stops throwing (an `expect` that passes) and returns its value; at
 * the deadline rethrows the last error, so the failure shows the real assertion.
 * Tests wait for asynchronous effects with this instead of fixed sleeps.
 */
export async function eventually<T>(
  fn: () => T | Promise<T>,
  { timeoutMs = 5000, intervalMs = 10 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (performance.now() >= deadline) throw err
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
