/**
 * Waits for every promise to settle, then gives their values or throws the first failure in
 * argument order. Unlike Promise.all it never throws while another step is still running, so an
 * undo that follows a failure cannot race work still in flight.
 */
export async function settleAll<T extends readonly unknown[]>(...promises: { [K in keyof T]: PromiseLike<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(promises);
  for (const s of settled) if (s.status === 'rejected') throw s.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
